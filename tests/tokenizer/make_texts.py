#!/usr/bin/env python3
"""Writes texts.json: the tokenizer parity test texts (name -> text).

Run from anywhere: python3 tests/tokenizer/make_texts.py.  The output is
committed; rerun only to change the set (then regenerate expected_ids.json
with gen_expected.mjs)."""
import json, os

T = []
def add(name, text):
    T.append({"name": name, "text": text})

add("empty", "")
add("single_space", " ")
add("single_char", "a")
add("prose", "The quick brown fox jumps over the lazy dog. It was the best of times, "
    "it was the worst of times; it was the age of wisdom, it was the age of foolishness.")
add("prose_paragraphs", "Call me Ishmael. Some years ago\u2014never mind how long precisely\u2014having "
    "little or no money in my purse, and nothing particular to interest me on shore, "
    "I thought I would sail about a little and see the watery part of the world.\n\n"
    "\u201cWhat do you think?\u201d she asked. \u2018Nothing,\u2019 he said.\n")
add("code_c", "#include <stdio.h>\n\nint main(int argc, char **argv) {\n    for (int i = 0; i < argc; i++) {\n"
    "\tprintf(\"%d: %s\\n\", i, argv[i]);\n    }\n    return 0; // done\n}\n")
add("code_python", "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\n"
    "print([fib(i) for i in range(10)])  # [0, 1, 1, 2, ...]\n")
add("code_json", '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\u00e9"}}')
add("spaces_runs", "a  b   c    d     e      f" + " " * 17 + "g")
add("spaces_leading_trailing", "   leading and trailing   ")
add("tabs", "\tone\t\ttwo\t\t\tthree \t mixed\t ")
add("newlines", "line1\nline2\n\nline3\n\n\n\nline4\n")
add("crlf", "first line\r\nsecond line\r\n\r\nthird\r\n")
add("whitespace_only", " \t\n \r\n  \n\n\t\t  ")
add("numbers", "0 1 12 123 1234 12345 123456789 3.14159 -42 1e-10 0xDEADBEEF 1,000,000 2024-11-28 12:34:56")
add("punctuation", "Hello, world! How's it going? (Fine.) [ok] {yes} <no> \"quoted\" 'single' --dash-- ...dots... !!! ??? ;;; :::")
add("contractions", "I'm sure you're right; they've said we'll go, but he'd not; it's John's and I'd've. DON'T SHOUT, Y'ALL'RE LOUD.")
add("accented_latin", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade \u00fcber Stra\u00dfe \u00e0 l'h\u00f4pital, \u0142\u00f3d\u017a, \u0159e\u0161en\u00ed, se\u00f1or, co\u00f6perate, \u00c5ngstr\u00f6m")
add("accented_decomposed", "Cafe\u0301 nai\u0308ve re\u0301sume\u0301")
add("cjk", "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002\u6211\u559c\u6b22\u5b66\u4e60\u4e2d\u6587\u3002\ud55c\uad6d\uc5b4\ub3c4 \uc788\uc2b5\ub2c8\ub2e4. \u6f22\u5b57\u3068\u304b\u306a\u3068\u30ab\u30bf\u30ab\u30ca")
add("arabic", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0647\u0630\u0627 \u0646\u0635 \u0639\u0631\u0628\u064a \u0645\u0639 \u0623\u0631\u0642\u0627\u0645 \u0661\u0662\u0663 \u0648 123.")
add("hebrew_devanagari_thai", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a")
add("cyrillic_greek", "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u03ba\u03cc\u03c3\u03bc\u03b5.")
add("emoji_basic", "I love pizza \U0001F355 and cats \U0001F408! \U0001F600\U0001F603\U0001F604")
add("emoji_skin_tones", "\U0001F44D\U0001F3FB \U0001F44D\U0001F3FC \U0001F44D\U0001F3FD \U0001F44D\U0001F3FE \U0001F44D\U0001F3FF waving \U0001F44B\U0001F3FD")
add("emoji_zwj", "family \U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 couple \U0001F469\u200D\u2764\uFE0F\u200D\U0001F468 "
    "rainbow flag \U0001F3F3\uFE0F\u200D\U0001F308 technologist \U0001F469\U0001F3FE\u200D\U0001F4BB flags \U0001F1EF\U0001F1F5\U0001F1FA\U0001F1F8")
add("symbols_math", "\u2200x \u2208 \u211d: x\u00b2 \u2265 0 \u21d2 \u221a(x\u00b2) = |x| \u2248 \u03c0 \u00b1 \u221e \u00a9 \u00ae \u2122 \u20ac100 \u00a350 \u00a51000")
add("special_gpt2_inside", "Hello<|endoftext|>world <|endoftext|> again<|endoftext|>")
add("special_llama_inside", "<s>Hello</s> world <s> again </s><unk>")
add("special_lookalikes", "<|endoftext|<|endoftext> </s <s>> <<s>> <|endoftext|><|endoftext|>")
add("long_repeat_char", "a" * 3000)
add("long_repeat_word", "hello " * 500)
add("long_repeat_pattern", "ab" * 1500)
add("long_word_no_spaces", "".join("supercalifragilisticexpialidocious" for _ in range(60)))
add("long_spaces", " " * 1000 + "x")
add("long_newlines", "\n" * 300 + "end")
add("long_emoji", "\U0001F600" * 300)
add("long_digits", "1234567890" * 100)
add("control_chars", "bell\x07 esc\x1b[0m del\x7f nbsp\u00a0here zwsp\u200bthere bom\ufeffx")
add("unicode_spaces", "a\u2003b\u2009c\u3000d\u202fe\u00a0 f")
add("replacement_char", "bad \ufffd char and \ufffd\ufffd two")
add("mixed_scripts", "English \u65e5\u672c\u8a9e \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \U0001F600 code: x += 1;")
add("url_email", "Visit https://example.com/path?q=1&r=two#frag or mail someone@example.org.")
add("markdown", "# Title\n\n- item *one*\n- item **two**\n\n```c\nint x = 1;\n```\n\n| a | b |\n|---|---|\n")
add("apostrophe_variants", "it's it\u2019s it`s 's 'S 'll 'LL")
add("trailing_newline_space", "end \n")
add("leading_space_word", " hello")
add("double_space_word", "  hello")

add("unicode_space_zoo", "a\u0085b\u2028c\u2029d\u1680e\u180ef\u205fg\u3000h\u000bi\u000cj\u001ck")
add("numbers_other", "\u00b2 \u00bd \u2162 \u216b \u0966\u0967 \uff11\uff12 \u2460 x\u00b3y")
add("combining_after_space", "a \u0301b  \u0308c\t\u0327d")
add("lone_cr_and_mixed", "a\rb\r\rc\n\rd \r\n e")
add("regex_classes", "snake_case\u203fjoined cafe\u0301 x\u0308y \u2460\u2461 deadBEEF 0x1f\nline end\nA\n\u00b2x_ \u180e\u00a0|")
# Characters newer than Unicode 14 (tokenizer/tok_ugap.h ranges and the
# digits Rust's char::is_numeric adds): one from each range, in words.
import re as _re
_gap = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tokenizer", "tok_ugap.h")).read()
_cps = sorted(set(int(x, 16) for x in _re.findall(r"x\{([0-9A-F]+)\}", _gap)))
_cps += [0x10D40, 0x116D0, 0x11BF0, 0x11DE0, 0x11F50, 0x16130, 0x16D70, 0x16FF4, 0x1CCF0, 0x1D2C0, 0x1E4F0, 0x1E5F1]
for _i in range(0, len(_cps), 40):
    add(f"unicode_new_{_i // 40}", "".join(("ab" if k % 3 else " 12") + chr(c) + ("x" if k % 2 else "")
                                          for k, c in enumerate(_cps[_i:_i + 40])))
add("added_token_flags", "x  <|im_start|>  y foo food afoo foo. (foo) <|im_end|>  z <|im_start|><|im_start|>\n<|im_end|>")
add("added_normalized", "a hello world b hello  world Hello world hello world[INST]  [INST]x  [INST]")
add("special_with_spaces", "  <s>  text  </s>  <|endoftext|>  ")

# Seeded random texts over a mix of character classes (the same every run).
import random
rng = random.Random(20261128)
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789", " ", "  ", "\t", "\n", "\r\n", "'s", "'t", "'re", "'LL", ".,;:!?-_()[]{}<>\"'/\\@#$%^&*+=~`|",
    "\u00e9\u00e8\u00fc\u00f1\u00e7\u00df\u00f8\u00e5", "\u0301\u0308\u0327",
    "\u4e00\u4e8c\u4e09\u65e5\u672c\u8a9e\u3042\u30a2\ud55c",
    "\u0627\u0644\u0639\u0631\u0628", "\u0430\u0431\u0432\u0433\u03b1\u03b2",
    "\U0001F600\U0001F44D\U0001F3FD\u200d\u2764\ufe0f\U0001F1EF\U0001F1F5",
    "\u00a0\u2003\u3000\u2028\u0085\u180e\ufeff\u200b",
    "\u00b2\u00bd\u2162\u0966", "<s>", "</s>", "<unk>", "<|endoftext|>", "\ufffd", "\x7f\x01",
]
for i in range(40):
    parts = []
    for _ in range(rng.randint(1, 60)):
        pool = rng.choice(POOLS)
        if len(pool) > 3 and not pool.startswith("<"):
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        else:
            parts.append(pool)
    add(f"random_{i:02d}", "".join(parts))

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "texts.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(T, f, ensure_ascii=True, indent=1)
    f.write("\n")
print(f"{len(T)} texts -> {out}")
