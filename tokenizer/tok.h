/*
 * tokenizer/tok.h - text <-> token ids with the exact behaviour of Hugging Face
 * `tokenizers`, incremental UTF-8-safe decoding, and stop-string matching.
 *
 * A tokenizer is loaded from a Hugging Face `tokenizer.json` whose model is BPE:
 * byte-level BPE (GPT-2, and the Llama-3 / Qwen layout of Split + ByteLevel) and
 * SentencePiece-style BPE (Llama-2, Mistral: Prepend/Replace normalizer or
 * Metaspace pre-tokenizer, byte_fallback); NFC/NFD/NFKC/NFKD normalizers when
 * built with utf8proc.  Every component of the file that
 * this module does not implement makes tok_load fail with ASA_EUNSUPPORTED and
 * a message naming the component; nothing is approximated.  The supported set
 * is listed in tokenizer/README.md.
 *
 * Ownership and threads: a loaded tok_tokenizer is immutable and may be used
 * from any number of threads at once (tok_encode, tok_decode, the getters,
 * and creating streams on it).  The only shared mutable state inside it is the
 * BPE word cache, which is split into shards, each behind its own mutex.
 * tok_encode keeps scratch buffers per calling thread between calls (at most
 * a few MB; freed when the thread exits).  A tok_stream and a tok_stop belong to one thread at a time (one per request).
 * A tok_stream borrows its tokenizer: destroy the stream first.
 *
 * Buffers: results go into caller-owned growable buffers (tok_ids, tok_str)
 * that start zeroed ({0}) and are released with tok_ids_free / tok_str_free.
 * Functions that "set" a buffer replace its contents; functions that "append"
 * add to the end.  On error a set buffer holds unspecified (but valid) data.
 * tok_str data is always NUL-terminated after a successful call (the NUL is
 * not counted in len).
 */
#ifndef ASA_TOK_H
#define ASA_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "asa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tok_tokenizer tok_tokenizer;

typedef struct tok_ids {
    int32_t *ids; /* [len] token ids; NULL while cap == 0 */
    size_t len;
    size_t cap;
} tok_ids;

typedef struct tok_str {
    char *data; /* [len] UTF-8 bytes + NUL; NULL while cap == 0 */
    size_t len;
    size_t cap;
} tok_str;

void tok_ids_free(tok_ids *v); /* frees and zeroes; NULL-safe */
void tok_str_free(tok_str *s); /* frees and zeroes; NULL-safe */

/* ---- loading ----------------------------------------------------------- */

/* Loads a tokenizer.json.  If a tokenizer_config.json lies in the same folder,
 * its "bos_token" / "eos_token" choose tok_bos_id / tok_eos_id (see there).
 * Returns 0 and *out (free with tok_destroy), or
 *   ASA_EIO          the file cannot be read,
 *   ASA_EFORMAT      not JSON or a field has the wrong type / is missing,
 *   ASA_EUNSUPPORTED a component or option this module does not implement
 *                    (the message names it, e.g. "model.type \"Unigram\""),
 *   ASA_ENOMEM.
 * eb (may be NULL) receives the reason. */
asa_err tok_load(const char *path, tok_tokenizer **out, asa_errbuf *eb);

/* Same from memory: json[len] is the content of a tokenizer.json; config_json
 * (may be NULL) the content of a tokenizer_config.json. */
asa_err tok_load_json(const char *json, size_t len, const char *config_json,
                      tok_tokenizer **out, asa_errbuf *eb);

/* NULL-safe. */
void tok_destroy(tok_tokenizer *t);

/* Invariant walker (tests, debug asserts): every vocabulary entry maps to an
 * id whose string is that entry, every merge names ids inside the id space,
 * added tokens agree with the id tables, the word cache shards are within
 * bounds.  Returns 0 or ASA_EINTERNAL. */
asa_err tok_check(const tok_tokenizer *t);

/* ---- encode / decode --------------------------------------------------- */

/* Encodes text[len] (UTF-8; NUL bytes are ordinary characters) and sets *out
 * to the ids.  add_special: apply the file's post-processor (e.g. prepend
 * <s>), as Hugging Face does with add_special_tokens=True; the default for
 * every caller of this project.  Added/special tokens written in the text are
 * recognised either way.
 * Returns 0, ASA_EUTF8 (text is not valid UTF-8; eb names the byte offset),
 * ASA_EINVAL (NULL arguments), ASA_ENOMEM. */
asa_err tok_encode(const tok_tokenizer *t, const char *text, size_t len,
                   bool add_special, tok_ids *out, asa_errbuf *eb);

/* Decodes ids[n] and sets *out to the text, as Hugging Face's
 * decode(ids, skip_special_tokens) does: ids outside the vocabulary are
 * dropped, byte sequences that are not UTF-8 become U+FFFD.  The result is
 * always valid UTF-8.  Returns 0, ASA_EINVAL, ASA_ENOMEM. */
asa_err tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n,
                   bool skip_special, tok_str *out);

/* ---- vocabulary -------------------------------------------------------- */

/* Number of ids: max(id) + 1 over the model vocabulary and added tokens. */
size_t tok_vocab_size(const tok_tokenizer *t);
/* Beginning / end of sequence ids, or -1 if the tokenizer has none.
 * Taken from tokenizer_config.json when it was found, else: BOS = the special
 * token that the post-processor puts first; EOS = the first special added
 * token among "</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>",
 * "<|eot_id|>", "<eos>". */
int32_t tok_bos_id(const tok_tokenizer *t);
int32_t tok_eos_id(const tok_tokenizer *t);
/* True when id is an added token marked special (skipped by skip_special). */
bool tok_is_special(const tok_tokenizer *t, int32_t id);
/* The raw vocabulary string of id (e.g. "Ġthe", "▁the", "<0x0A>", "<s>"),
 * borrowed from t, NUL-terminated, length in *len (may be NULL); NULL if id
 * is not in the vocabulary. */
const char *tok_id_to_token(const tok_tokenizer *t, int32_t id, size_t *len);
/* The id of a raw vocabulary string (added tokens first), or -1. */
int32_t tok_token_to_id(const tok_tokenizer *t, const char *s, size_t len);
/* The bytes id contributes when it stands in the middle of a text: the
 * decoder's per-token rules without the rules for the start of the text
 * ("Ġthe" and "▁the" give " the"; a byte-fallback token <0xE4> gives the raw
 * byte 0xE4, which on its own is not valid UTF-8; an added token gives its
 * content).  This is the piece for logprobs and token-level output; use a
 * tok_stream for text.  Sets *out; *is_special (may be NULL) tells whether id
 * is special.  Returns 0, ASA_ENOTFOUND (id not in the vocabulary), ASA_ENOMEM. */
asa_err tok_token_to_piece(const tok_tokenizer *t, int32_t id, tok_str *out,
                           bool *is_special);

/* ---- incremental decoding ---------------------------------------------- */

/* A stream turns ids fed one at a time into text, emitting only complete
 * UTF-8 characters: a character split across tokens (byte-level pieces or
 * <0xNN> byte-fallback tokens) is held until its last byte arrives.  It keeps
 * a short window of earlier ids so that rules about the first token (the
 * SentencePiece leading space) apply exactly as in a one-shot tok_decode:
 * the concatenation of everything a stream emits, including its flush, equals
 * tok_decode of all ids fed (this is what Hugging Face's DecodeStream does,
 * plus a flush at the end).  One exception, inherent to streaming: when a run
 * of byte-fallback tokens that already formed complete characters goes on
 * with bytes that make the run invalid, tok_decode (like the library) turns
 * the whole run into U+FFFD, while the stream has already emitted the good
 * characters; it then emits U+FFFD for the rest only. */
typedef struct tok_stream tok_stream;

/* Returns 0 and *out, or ASA_EINVAL / ASA_ENOMEM.  skip_special as in
 * tok_decode.  The stream borrows t. */
asa_err tok_stream_create(const tok_tokenizer *t, bool skip_special,
                          tok_stream **out);
void tok_stream_destroy(tok_stream *s); /* NULL-safe */
/* Gives the stream the ids that come before the ones it will be fed (the
 * prompt), without emitting them, so that the first fed id decodes as a
 * continuation: after a prompt, SentencePiece "▁Paris" streams as " Paris",
 * not "Paris".  Only the last few ids are kept.  Call it on a new or flushed
 * stream.  Returns 0, ASA_EINVAL, ASA_ENOMEM (stream unchanged). */
asa_err tok_stream_prime(tok_stream *s, const int32_t *ids, size_t n);
/* Feeds one id; appends to *out the text that became complete (often
 * nothing).  Returns 0, ASA_ENOMEM (stream unchanged). */
asa_err tok_stream_push(tok_stream *s, int32_t id, tok_str *out);
/* End of the ids: appends what is still held (an incomplete character becomes
 * U+FFFD, as in tok_decode) and resets the stream for reuse. */
asa_err tok_stream_flush(tok_stream *s, tok_str *out);

/* ---- stop strings ------------------------------------------------------ */

/* Matches stop strings in text that arrives in pieces.  feed() releases only
 * text that can no longer be part of a stop string; the rest (the longest
 * suffix that is a prefix of some stop string) is held back.  A match is the
 * one that completes first in the stream (smallest end offset; among those,
 * the longest, i.e. the one starting earliest), so the result does not depend
 * on how the text was cut into pieces.  After a match the matcher is finished:
 * further feeds release nothing. */
typedef struct tok_stop tok_stop;

/* stops[n]: NUL-terminated, non-empty UTF-8 strings (copied).  n may be 0
 * (then everything is released at once).  Returns 0, ASA_EINVAL (an empty
 * stop string), ASA_ENOMEM. */
asa_err tok_stop_create(const char *const *stops, size_t n, tok_stop **out);
void tok_stop_destroy(tok_stop *m); /* NULL-safe */
/* Feeds text[len] and appends the releasable text to *release.
 * *matched (may be NULL) is set to the index of the stop string that matched
 * in this call, or -1; *match_at (may be NULL) to its byte offset from the
 * start of all text ever fed (or -1).  The released text then ends exactly
 * where the stop string begins; the stop string and what follows it are
 * dropped.  Returns 0, ASA_ENOMEM (matcher unchanged). */
asa_err tok_stop_feed(tok_stop *m, const char *text, size_t len, tok_str *release,
                      int *matched, int64_t *match_at);
/* End of text without a match: appends the held-back text. */
asa_err tok_stop_finish(tok_stop *m, tok_str *release);
/* Bytes held back right now (for tests and metrics). */
size_t tok_stop_held(const tok_stop *m);

/* ---- UTF-8 ----------------------------------------------------------- */

/* Returns the byte offset of the first invalid UTF-8 sequence in s[len], or
 * len when s is valid (overlong forms, surrogates and > U+10FFFF are invalid). */
size_t tok_utf8_valid_prefix(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* ASA_TOK_H */
