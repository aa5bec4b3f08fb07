/*
 * Lantern: widening conversion between IEEE-754 binary formats (e.g. half
 * bits -> float), used by the runtime's sort kernels for float16 keys.
 * Written for Lantern.
 */
#ifndef LANTERN_BUILTIN_FP16_H_
#define LANTERN_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

/*!
 * \brief Convert `a` (a value of the narrow format, or its bit pattern) to the
 *        wider format.  SIG_BITS are the stored mantissa bits of each format.
 */
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __extendXfYf2__(SRC_T a) {
  static_assert(sizeof(SRC_T) == sizeof(SRC_REP_T), "source type/bits mismatch");
  static_assert(sizeof(DST_T) == sizeof(DST_REP_T), "destination type/bits mismatch");
  constexpr int kSrcBits = int(sizeof(SRC_REP_T)) * 8;
  constexpr int kDstBits = int(sizeof(DST_REP_T)) * 8;
  constexpr int kSrcExpBits = kSrcBits - SRC_SIG_BITS - 1;
  constexpr int kDstExpBits = kDstBits - DST_SIG_BITS - 1;
  constexpr int kSrcBias = (1 << (kSrcExpBits - 1)) - 1;
  constexpr int kDstBias = (1 << (kDstExpBits - 1)) - 1;
  constexpr int kSrcExpMax = (1 << kSrcExpBits) - 1;
  constexpr int kDstExpMax = (1 << kDstExpBits) - 1;
  static_assert(DST_SIG_BITS >= SRC_SIG_BITS && kDstExpBits >= kSrcExpBits, "not a widening");

  SRC_REP_T src;
  std::memcpy(&src, &a, sizeof(src));
  const DST_REP_T sign = DST_REP_T((src >> (kSrcBits - 1)) & 1) << (kDstBits - 1);
  int exp = int((src >> SRC_SIG_BITS) & SRC_REP_T(kSrcExpMax));
  DST_REP_T sig = DST_REP_T(src & ((SRC_REP_T(1) << SRC_SIG_BITS) - 1));

  DST_REP_T dst_exp;
  if (exp == kSrcExpMax) {  // inf / nan: keep the payload
    dst_exp = DST_REP_T(kDstExpMax);
  } else if (exp == 0 && sig == 0) {  // signed zero
    dst_exp = 0;
  } else {
    if (exp == 0) {  // subnormal: normalize so the leading 1 is implicit
      exp = 1;
      while ((sig & (DST_REP_T(1) << SRC_SIG_BITS)) == 0) {
        sig <<= 1;
        --exp;
      }
      sig &= (DST_REP_T(1) << SRC_SIG_BITS) - 1;
    }
    dst_exp = DST_REP_T(exp - kSrcBias + kDstBias);
  }
  DST_REP_T dst = sign | (dst_exp << DST_SIG_BITS) | (sig << (DST_SIG_BITS - SRC_SIG_BITS));
  DST_T out;
  std::memcpy(&out, &dst, sizeof(out));
  return out;
}

#endif  // LANTERN_BUILTIN_FP16_H_
