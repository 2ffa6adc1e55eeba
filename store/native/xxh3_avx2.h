/* XXH3 built for AVX2 (xxh3_avx2.c); call only when pinhole_xxh3_avx2_built() and the CPU
 * supports AVX2. */
#ifndef PINHOLE_XXH3_AVX2_H
#define PINHOLE_XXH3_AVX2_H

#include <stddef.h>
#include <stdint.h>

int pinhole_xxh3_avx2_built(void);
uint64_t pinhole_xxh3_avx2(const void *data, size_t size, uint64_t seed);

#endif
