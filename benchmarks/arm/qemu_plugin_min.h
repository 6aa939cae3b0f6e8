/*
 * The few declarations of QEMU's TCG plugin ABI that insn_count.c uses,
 * written for litedet because Debian 12 ships no qemu-plugin.h (apt-file finds
 * none in bookworm). They follow the public plugin API of QEMU 7.2 (Debian's
 * qemu-user 1:7.2+dfsg), API version 1. Everything else about the API is
 * left out on purpose: add a declaration only together with the code that
 * uses it, and check it against the QEMU version in use.
 */
#ifndef LITEDET_QEMU_PLUGIN_MIN_H
#define LITEDET_QEMU_PLUGIN_MIN_H

#include <stddef.h>
#include <stdint.h>

#define LITEDET_PLUGIN_API __attribute__((visibility("default")))

/* API level this plugin is written against (QEMU 7.2 accepts 0..1). */
#define QEMU_PLUGIN_VERSION 1

typedef uint64_t qemu_plugin_id_t;

/* Only ever received as a pointer; the plugin does not read it. */
typedef struct qemu_info_t qemu_info_t;

/* Opaque handle to a translation block, valid during the translation callback. */
struct qemu_plugin_tb;

/* Inline operations QEMU can emit into translated code; 7.2 has just one. */
enum qemu_plugin_op {
    QEMU_PLUGIN_INLINE_ADD_U64 = 0,
};

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                                              uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                                              uint64_t a7, uint64_t a8);

/* Exported by the plugin: QEMU reads the version, then calls install. */
extern LITEDET_PLUGIN_API int qemu_plugin_version;
LITEDET_PLUGIN_API int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv);

/* Provided by the qemu binary (resolved when QEMU dlopens the plugin). */
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);

#endif
