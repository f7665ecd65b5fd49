/*
 * server/chat.h - built-in chat templates (no Jinja): messages to prompt text.
 *
 * Supported names: "chatml" (<|im_start|>role\n...<|im_end|>\n), "llama2"
 * ([INST] ... [/INST], system folded into the first user turn with <<SYS>>)
 * and "plain" ("User: ...\nAssistant: ...").  srv_chat_template_detect picks
 * one from a Hugging Face chat_template string by its markers.
 */
#ifndef ASA_SRV_CHAT_H
#define ASA_SRV_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "asa.h"
#include "oai.h"

typedef enum srv_chat_template { SRV_CHAT_CHATML = 0, SRV_CHAT_LLAMA2, SRV_CHAT_PLAIN } srv_chat_template;

/* Returns 0 and sets *t for a known name, -1 otherwise. */
int srv_chat_template_parse(const char *name, srv_chat_template *t);
const char *srv_chat_template_name(srv_chat_template t);
/* Guesses from a Jinja template's text; chatml when nothing matches. */
srv_chat_template srv_chat_template_detect(const char *jinja);

/* Renders p->messages (with add_generation_prompt / continue_final_message)
 * into arena text.  bos: the BOS token text to start with for llama2 (may be
 * NULL).  Returns NULL when out of memory. */
char *srv_chat_render(srv_chat_template t, const srv_params *p, const char *bos,
                      asa_arena *a, size_t *len);

#endif
