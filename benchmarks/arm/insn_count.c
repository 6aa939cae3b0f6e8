/*
 * insn_count: a QEMU TCG plugin that counts the guest instructions executed.
 *
 * When a translation block is translated, one inline "add n" is attached to
 * it, n being the block's instruction count; every execution of the block then
 * adds n to a single 64-bit counter with no call into the plugin. At exit the
 * total is written as "insns <N>" to the file given by outfile=PATH (and to
 * QEMU's log through qemu_plugin_outs, which needs `-d plugin`).
 *
 * The counter is not atomic: the count is exact for a single guest thread,
 * which is how litedet measures (threads=1, OMP/OpenBLAS limited to one).
 * A block left early by an exception still counts in full; single-threaded
 * user-mode code that does not fault is unaffected.
 *
 *   qemu-aarch64 -cpu cortex-a76 -plugin ./libinsn_count.so,outfile=/tmp/n prog
 *
 * With marks=PATH, every getppid system call of the guest (aarch64 number 173; a program
 * calls it only on purpose) appends the counter so far to PATH, one number per line: a guest
 * program marks the points between which it wants the instructions counted (icount_child.py's
 * per-layer mode calls os.getppid() between ncnn layers).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_min.h"

LITEDET_PLUGIN_API int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static uint64_t insn_total;
static char *out_path;
static FILE *marks;

#define MARK_SYSCALL 173 /* getppid on aarch64 */

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id, (void)vcpu, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num == MARK_SYSCALL && marks)
        fprintf(marks, "%" PRIu64 "\n", insn_total);
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insn_total,
                                             (uint64_t)qemu_plugin_tb_n_insns(tb));
}

static void on_guest_exit(qemu_plugin_id_t id, void *userdata)
{
    char line[64];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "insns %" PRIu64 "\n", insn_total);
    qemu_plugin_outs(line);
    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (!f) {
            fprintf(stderr, "insn_count: cannot write %s\n", out_path);
            return;
        }
        fputs(line, f);
        fclose(f);
    }
    if (marks)
        fclose(marks);
}

LITEDET_PLUGIN_API int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            out_path = strdup(argv[i] + 8);
        } else if (strncmp(argv[i], "marks=", 6) == 0) {
            marks = fopen(argv[i] + 6, "w");
            if (!marks) {
                fprintf(stderr, "insn_count: cannot write %s\n", argv[i] + 6);
                return -1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument '%s' (known: outfile=PATH, marks=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
    if (marks)
        qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    return 0;
}
