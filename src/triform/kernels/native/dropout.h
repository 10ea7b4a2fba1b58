/* The keep decisions of triform's dropout (dropout.c) and of the training attention's dropout on its
   probabilities (training_attention.h): 15 bits hashed from an element's index and the call's seed,
   murmur3's 32-bit finalizer twice. Counter-based, so any thread may take any element and a backward
   pass finds the forward pass's decisions again without keeping them. */

#ifndef TRIFORM_DROPOUT_H
#define TRIFORM_DROPOUT_H

#include <stdint.h>

static inline uint32_t mix(uint32_t h) {
  h ^= h >> 16, h *= 0x85ebca6bu;
  h ^= h >> 13, h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

/* 15 random bits for element i of the call seeded by seed. */
static inline uint32_t draw(uint64_t i, uint64_t seed) {
  uint32_t low = (uint32_t)seed, high = (uint32_t)(seed >> 32);
  return mix(mix((uint32_t)i ^ low) + high + (uint32_t)(i >> 32) * 0x9e3779b9u) & 0x7fffu;
}

#endif
