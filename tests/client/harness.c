/* tests/client/harness.c - child processes for the asa-bench tests. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

const char *h_bench_bin;
const char *h_server_bin;
double h_interrupt_after;
static char tmpdir[256];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb;
    (void)flag;
    (void)f;
    return remove(path);
}

/* Removes the temporary directory (registered with atexit). */
static void h_cleanup(void) {
    if (tmpdir[0] && !getenv("ASA_KEEP_TEST_FILES"))
        nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int h_init(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ASA_BENCH SCRIPTED_SERVER\n", argv[0]);
        return -1;
    }
    h_bench_bin = argv[1];
    h_server_bin = argv[2];
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/asa-bench-test-XXXXXX", base);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    atexit(h_cleanup);
    return 0;
}

const char *h_tmp(const char *name, int slot) {
    static char bufs[4][512];
    snprintf(bufs[slot & 3], sizeof bufs[0], "%s/%s", tmpdir, name);
    return bufs[slot & 3];
}

int h_server_start(h_server *s, const char *const *args) {
    int pfd[2];
    s->pid = -1;
    s->port = 0;
    if (pipe(pfd) != 0)
        return -1;
    const char *argv[64];
    int n = 0;
    argv[n++] = h_server_bin;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a killed test */
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execv(h_server_bin, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    FILE *f = fdopen(pfd[0], "r");
    char line[64] = "";
    if (!f || !fgets(line, sizeof line, f) || sscanf(line, "PORT %d", &s->port) != 1) {
        if (f)
            fclose(f);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    fclose(f);
    s->pid = pid;
    return 0;
}

void h_server_stop(h_server *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
    }
    s->pid = -1;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b) {
        fclose(f);
        return NULL;
    }
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = '\0';
    fclose(f);
    return b;
}

int h_bench_run(int port, const char *const *args, double timeout_s, char **out,
                char **err) {
    char url[64];
    const char *argv[96];
    int n = 0;
    argv[n++] = h_bench_bin;
    if (port > 0) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
        argv[n++] = "--base-url";
        argv[n++] = url;
    }
    for (int i = 0; args && args[i] && n < 94; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char opath[2048], epath[2048];
    snprintf(opath, sizeof opath, "%s", h_tmp("bench.stdout", 0));
    snprintf(epath, sizeof epath, "%s", h_tmp("bench.stderr", 0));
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int o = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0)
            _exit(126);
        dup2(o, 1);
        dup2(e, 2);
        execv(h_bench_bin, (char *const *)argv);
        _exit(127);
    }
    double started = now_s(), deadline = started + timeout_s;
    double interrupt_at = h_interrupt_after > 0 ? started + h_interrupt_after : 0;
    h_interrupt_after = 0;
    int status = 0;
    for (;;) {
        if (interrupt_at > 0 && now_s() >= interrupt_at) {
            kill(pid, SIGINT);
            interrupt_at = 0;
        }
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "asa-bench timed out after %.0f s\n", timeout_s);
            return -1;
        }
        usleep(20000);
    }
    char *o = slurp(opath), *e = slurp(epath);
    /* Show what the child said, for the ctest log. */
    fprintf(stderr, "---- asa-bench stdout ----\n%s---- asa-bench stderr ----\n%s", o ? o : "",
            e ? e : "");
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    if (!WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

json_t *h_load_json(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j)
        fprintf(stderr, "%s: %s (line %d)\n", path, je.text, je.line);
    return j;
}

double h_num(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) {
        fprintf(stderr, "result JSON: \"%s\" is missing or not a number\n", key);
        fail();
    }
    return json_number_value(v);
}
