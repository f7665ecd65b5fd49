#!/bin/sh
# asa-tokenize end to end: encode, decode, --no-special, errors.
# Needs ASA_BINARY_DIR (set by ctest) and the decompressed vocabularies.
set -u
BIN="$ASA_BINARY_DIR/tokenizer/asa-tokenize"
DATA="$ASA_BINARY_DIR/tests/tokenizer/data"
fails=0; passes=0
check() { # name, expected, actual
  if [ "$2" = "$3" ]; then passes=$((passes + 1)); else
    echo "FAIL $1: expected [$2] got [$3]"; fails=$((fails + 1)); fi
}
G="$DATA/gpt2/tokenizer.json"; M="$DATA/mistral/tokenizer.json"

check gpt2-encode "[15496,995,11,428,318,257,1332,13]" \
  "$(printf 'Hello world, this is a test.' | "$BIN" --tokenizer "$G")"
check mistral-encode "[1,22557,1526]" "$(printf 'Hello world' | "$BIN" --tokenizer "$M")"
check mistral-encode-nospecial "[22557,1526]" \
  "$(printf 'Hello world' | "$BIN" --tokenizer "$M" --no-special)"
check mistral-decode "<s> Hello world" \
  "$(echo '[1,22557,1526]' | "$BIN" --tokenizer "$M" --decode)"
check mistral-decode-skip "Hello world" \
  "$(echo '[1, 22557, 1526]' | "$BIN" --tokenizer "$M" --decode --no-special)"
check gpt2-special-in-text "[5303,50256,16390]" \
  "$(printf 'hi<|endoftext|>bye' | "$BIN" --tokenizer "$G")"
check empty "[]" "$(printf '' | "$BIN" --tokenizer "$G")"
# round trip of a C source file (code, quotes, tabs, newlines); $(...) drops
# trailing newlines on both sides alike
SRC="$ASA_SOURCE_DIR/tokenizer/tok_stop.c"
want="$(cat "$SRC")"
got="$("$BIN" --tokenizer "$G" < "$SRC" | "$BIN" --tokenizer "$G" --decode)"
check gpt2-roundtrip "$want" "$got"
got="$("$BIN" --tokenizer "$M" --no-special < "$SRC" | "$BIN" --tokenizer "$M" --decode)"
check mistral-roundtrip "$want" "$got"

# invalid UTF-8: exit 1 and a message naming the byte
err="$(printf 'ab\377' | "$BIN" --tokenizer "$G" 2>&1 >/dev/null)"; rc=$?
check invalid-utf8-rc 1 "$rc"
case "$err" in *"invalid UTF-8 at byte 2"*) passes=$((passes + 1)) ;;
  *) echo "FAIL invalid-utf8-msg: [$err]"; fails=$((fails + 1)) ;; esac
# bad input to --decode, missing file, bad usage
echo '[1, "x"]' | "$BIN" --tokenizer "$G" --decode >/dev/null 2>&1; check decode-bad-rc 1 $?
echo 'not json' | "$BIN" --tokenizer "$G" --decode >/dev/null 2>&1; check decode-nojson-rc 1 $?
"$BIN" --tokenizer /nonexistent.json </dev/null >/dev/null 2>&1; check missing-file-rc 1 $?
"$BIN" --bogus </dev/null >/dev/null 2>&1; check usage-rc 2 $?

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
