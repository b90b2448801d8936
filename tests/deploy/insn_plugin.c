/* A qemu TCG plugin that counts guest instructions, per translation block start address
 * (tests/deploy/count_instructions.py builds and uses it).
 *
 * Debian's qemu-user 7.2 loads plugins (-plugin FILE.so) but ships none, and there is no
 * qemu-plugin.h package, so the few entry points of plugin API version 1 that this file
 * uses are declared here by hand (the ABI of qemu 7.x: include/qemu/qemu-plugin.h).
 *
 * How it counts: at translation, each block gets a record {start address, instructions}
 * and an inline "add 1" to the record's counter, which qemu emits into the translated code
 * itself (no callback per execution, so the run is only ~2x slower than without the
 * plugin).  At exit: the total, sum over records of instructions * executions, goes to
 * stderr as "insns: N"; with out=FILE, one line "start_address instructions executions"
 * per record also goes to FILE (the script attributes them to functions with nm).  A block
 * retranslated at the same address gets a second record; the script adds them up.
 *
 * Build: gcc -O2 -shared -fPIC -o insn_plugin.so insn_plugin.c
 * Run:   qemu-aarch64 -plugin ./insn_plugin.so,out=blocks.txt PROGRAM ARGS */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb*);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t, void*);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, qemu_plugin_vcpu_tb_trans_cb_t);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb*, enum qemu_plugin_op, void*,
                                              uint64_t);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, qemu_plugin_udata_cb_t, void*);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb*);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb*);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct block {
  uint64_t addr, insns, execs;
  struct block* next;
};

static struct block* blocks; /* linked list, newest first (user mode: one vCPU thread here) */
static char out_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  (void)id;
  struct block* b = calloc(1, sizeof *b);
  b->addr = qemu_plugin_tb_vaddr(tb);
  b->insns = qemu_plugin_tb_n_insns(tb);
  b->next = blocks;
  blocks = b;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
}

static void at_exit(qemu_plugin_id_t id, void* p) {
  (void)id;
  (void)p;
  uint64_t total = 0;
  FILE* f = out_path[0] ? fopen(out_path, "w") : NULL;
  for (struct block* b = blocks; b; b = b->next) {
    total += b->insns * b->execs;
    if (f && b->execs) fprintf(f, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->addr, b->insns, b->execs);
  }
  if (f) fclose(f);
  fprintf(stderr, "insns: %" PRIu64 "\n", total);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                              const qemu_info_t* info, int argc,
                                                              char** argv) {
  (void)info;
  for (int i = 0; i < argc; ++i)
    if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
