/* server/chat.c - built-in chat templates. */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int srv_chat_template_parse(const char *name, srv_chat_template *t) {
    if (!name)
        return -1;
    if (!strcmp(name, "chatml"))
        *t = SRV_CHAT_CHATML;
    else if (!strcmp(name, "llama2"))
        *t = SRV_CHAT_LLAMA2;
    else if (!strcmp(name, "plain"))
        *t = SRV_CHAT_PLAIN;
    else
        return -1;
    return 0;
}

const char *srv_chat_template_name(srv_chat_template t) {
    static const char *names[] = {"chatml", "llama2", "plain"};
    return (unsigned)t < 3 ? names[t] : "chatml";
}

srv_chat_template srv_chat_template_detect(const char *jinja) {
    if (jinja && strstr(jinja, "[INST]"))
        return SRV_CHAT_LLAMA2;
    return SRV_CHAT_CHATML;
}

/* A growable string in the arena (copied on growth; prompts are small). */
typedef struct sb {
    asa_arena *a;
    char *p;
    size_t len, cap;
    int oom;
} sb;

static void sb_put(sb *s, const char *x, size_t n) {
    if (s->oom)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = (s->cap ? s->cap * 2 : 256) + n;
        char *np = asa_arena_alloc(s->a, cap);
        if (!np) {
            s->oom = 1;
            return;
        }
        if (s->len)
            memcpy(np, s->p, s->len);
        s->p = np;
        s->cap = cap;
    }
    memcpy(s->p + s->len, x, n);
    s->len += n;
    s->p[s->len] = 0;
}
static void sb_str(sb *s, const char *x) { sb_put(s, x, strlen(x)); }

static void render_chatml(sb *s, const srv_params *p) {
    for (int i = 0; i < p->n_messages; i++) {
        const srv_chat_msg *m = &p->messages[i];
        bool last_open = p->continue_final_message && i == p->n_messages - 1;
        sb_str(s, "<|im_start|>");
        sb_str(s, strcmp(m->role, "developer") ? m->role : "system");
        sb_str(s, "\n");
        sb_str(s, m->content);
        if (!last_open)
            sb_str(s, "<|im_end|>\n");
    }
    if (p->add_generation_prompt)
        sb_str(s, "<|im_start|>assistant\n");
}

static void render_llama2(sb *s, const srv_params *p, const char *bos) {
    const char *system = NULL;
    int i = 0;
    if (p->n_messages && (!strcmp(p->messages[0].role, "system") || !strcmp(p->messages[0].role, "developer"))) {
        system = p->messages[0].content;
        i = 1;
    }
    bool first_user = true;
    for (; i < p->n_messages; i++) {
        const srv_chat_msg *m = &p->messages[i];
        if (!strcmp(m->role, "assistant")) {
            sb_str(s, " ");
            sb_str(s, m->content);
            if (!(p->continue_final_message && i == p->n_messages - 1))
                sb_str(s, " </s>");
            continue;
        }
        if (bos)
            sb_str(s, bos);
        sb_str(s, "[INST] ");
        if (first_user && system) {
            sb_str(s, "<<SYS>>\n");
            sb_str(s, system);
            sb_str(s, "\n<</SYS>>\n\n");
        }
        first_user = false;
        sb_str(s, m->content);
        sb_str(s, " [/INST]");
    }
}

static void render_plain(sb *s, const srv_params *p) {
    for (int i = 0; i < p->n_messages; i++) {
        const srv_chat_msg *m = &p->messages[i];
        const char *who = !strcmp(m->role, "assistant") ? "Assistant"
                          : !strcmp(m->role, "user")    ? "User"
                                                        : "System";
        sb_str(s, who);
        sb_str(s, ": ");
        sb_str(s, m->content);
        if (!(p->continue_final_message && i == p->n_messages - 1))
            sb_str(s, "\n");
    }
    if (p->add_generation_prompt)
        sb_str(s, "Assistant:");
}

char *srv_chat_render(srv_chat_template t, const srv_params *p, const char *bos,
                      asa_arena *a, size_t *len) {
    sb s = {a, NULL, 0, 0, 0};
    sb_put(&s, "", 0);
    switch (t) {
    case SRV_CHAT_LLAMA2:
        render_llama2(&s, p, bos);
        break;
    case SRV_CHAT_PLAIN:
        render_plain(&s, p);
        break;
    default:
        render_chatml(&s, p);
        break;
    }
    if (s.oom)
        return NULL;
    if (len)
        *len = s.len;
    return s.p;
}
