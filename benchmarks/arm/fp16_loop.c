/*
 * fp16_loop: a tiny aarch64 workload with a known instruction count.
 *
 * Runs N iterations of fp16 vector fused multiply-adds (FMLA on 8 x fp16
 * lanes, an ARMv8.2-A FP16 instruction: it needs asimdhp) and prints the
 * sum of the lanes. Built statically by scripts/setup_arm.sh with
 * aarch64-linux-gnu-gcc -march=armv8.2-a+fp16, it checks the cross toolchain,
 * that qemu executes fp16 arithmetic, and it is the small workload on which
 * the insn_count plugin must give the same count twice.
 *
 *   qemu-aarch64 -cpu cortex-a76 fp16_loop 1000
 */
#include <arm_neon.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
    float16x8_t acc = vdupq_n_f16((float16_t)0.0f);
    const float16x8_t a = vdupq_n_f16((float16_t)0.5f);
    const float16x8_t b = vdupq_n_f16((float16_t)0.001f);
    for (long i = 0; i < n; i++) {
        acc = vfmaq_f16(acc, a, b);
        __asm__ volatile("" : "+w"(acc)); /* keep one FMLA per iteration */
    }
    float sum = 0.0f;
    for (int lane = 0; lane < 8; lane++) {
        float16_t v[8];
        vst1q_f16(v, acc);
        sum += (float)v[lane];
    }
    printf("fp16_loop n=%ld sum=%.6f\n", n, sum);
    return 0;
}
