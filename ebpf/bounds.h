/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
#ifndef SONDE_BOUNDS_H
#define SONDE_BOUNDS_H

#include <linux/types.h>

/* A length for a helper's size argument, at most `cap`, bounded in the very register the
 * helper gets. `n = len < cap ? len : cap` alone is not enough for older verifiers (6.1): on
 * the branch where len < cap clang may pass `len` itself, from another register or a stack
 * reload that the verifier does not tie to the compared copy, and the program is rejected with
 * "R2 unbounded memory access" (newer verifiers link them, which is why it loads on 6.12+).
 * The empty asm hides the value from clang, so the comparison after it is kept and made on the
 * value that is used. Every variable size passed to a helper goes through here
 * (scripts/kernel-matrix.sh proves it on 6.1 and 6.12). */
static __always_inline __u64 bounded(__u64 len, __u64 cap)
{
    asm volatile("" : "+r"(len));
    return len < cap ? len : cap;
}

#endif
