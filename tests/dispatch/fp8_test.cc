// Fp8Test: E4M3 / BF16 conversions bit by bit against brute-force references (the nearest of
// all representable codes, computed in double), and 1x128 tile quantization.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "switchyard/dispatch/fp8.h"

namespace switchyard::dispatch {
namespace {

// Value of an E4M3 code from its definition (sign, 4-bit exponent with bias 7, 3-bit mantissa).
double ref_e4m3_value(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  double v = e == 0 ? (m / 8.0) * std::pow(2.0, -6) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -v : v;
}
bool ref_is_nan_code(int code) { return (code & 0x7f) == 0x7f; }

// Nearest of the finite codes with x's sign; ties to the code with an even mantissa.
uint8_t ref_e4m3_encode(float x) {
  const int sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x)) return static_cast<uint8_t>(sign | 0x7f);
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return static_cast<uint8_t>(sign | 0x7e);
  int best = -1;
  double best_d = 0;
  for (int c = 0; c < 0x7f; ++c) {
    const double d = std::fabs(ref_e4m3_value(c) - a);
    if (best < 0 || d < best_d || (d == best_d && (c & 1) == 0)) {
      best = c;
      best_d = d;
    }
  }
  return static_cast<uint8_t>(sign | best);
}

// The code of x in a tile of the given scale: the nearest code of x / scale with x's sign
// (the sign rule of fp8.h, which makes inf / inf give 0x7F | sign of x on every platform).
uint8_t ref_tile_code(float x, float scale) {
  return static_cast<uint8_t>((ref_e4m3_encode(x / scale) & 0x7f) | (std::signbit(x) ? 0x80 : 0));
}

// Nearest BF16 by comparing the two neighbours of x in double; ties to even.
uint16_t ref_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint16_t lo = static_cast<uint16_t>(u >> 16), hi = static_cast<uint16_t>(lo + 1);
  auto val = [](uint16_t b) {
    uint32_t v = static_cast<uint32_t>(b) << 16;
    float f;
    std::memcpy(&f, &v, 4);
    return static_cast<double>(f);
  };
  if ((u & 0xffff) == 0) return lo;
  const double dl = std::fabs(val(lo) - x);
  const double dh = std::isinf(val(hi)) ? std::numeric_limits<double>::infinity() : std::fabs(val(hi) - x);
  // Rounding up into infinity happens when x is past the midpoint of FLT_MAX's BF16 and 2^128.
  if (std::isinf(val(hi))) {
    const double a = std::fabs(static_cast<double>(x)), mid = std::fabs(val(lo)) + std::ldexp(1.0, 127 - 8);
    return a > mid || (a == mid && (lo & 1)) ? hi : lo;
  }
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1) ? hi : lo;
}

std::vector<float> e4m3_test_points() {
  std::vector<float> pts;
  std::vector<double> vals;
  for (int c = 0; c < 0x7f; ++c) vals.push_back(ref_e4m3_value(c));
  vals.push_back(464.0);  // the would-be next code
  for (size_t i = 0; i < vals.size(); ++i) {
    const float v = static_cast<float>(vals[i]);
    pts.insert(pts.end(), {v, std::nextafter(v, 0.f), std::nextafter(v, 1e9f)});
    if (i + 1 < vals.size()) {
      const float mid = static_cast<float>((vals[i] + vals[i + 1]) / 2);  // exact in float
      pts.insert(pts.end(), {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f)});
    }
  }
  pts.insert(pts.end(), {0.f, 1e-30f, std::numeric_limits<float>::denorm_min(), 1e-3f, 448.5f, 500.f, 1e30f,
                         std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                         std::numeric_limits<float>::quiet_NaN()});
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-10.f, 10.f);
  for (int i = 0; i < 20000; ++i) pts.push_back(std::ldexp(u(rng), static_cast<int>(u(rng))));
  const size_t n = pts.size();
  for (size_t i = 0; i < n; ++i) pts.push_back(-pts[i]);
  return pts;
}

TEST(Fp8Test, DecodeMatchesDefinitionForAllCodes) {
  for (int c = 0; c < 256; ++c) {
    const float v = e4m3_to_float(static_cast<uint8_t>(c));
    if (ref_is_nan_code(c)) {
      EXPECT_TRUE(std::isnan(v)) << c;
      EXPECT_EQ(std::signbit(v), c >= 128) << c;
    } else {
      EXPECT_EQ(static_cast<double>(v), ref_e4m3_value(c)) << c;
    }
  }
  EXPECT_EQ(e4m3_to_float(0x7e), 448.f);
  EXPECT_EQ(e4m3_to_float(0x38), 1.f);
  EXPECT_EQ(e4m3_to_float(0x08), std::ldexp(1.f, -6));
  EXPECT_EQ(e4m3_to_float(0x01), std::ldexp(1.f, -9));
}

TEST(Fp8Test, EncodeRoundTripsEveryCode) {
  for (int c = 0; c < 256; ++c) {
    if (ref_is_nan_code(c)) continue;
    EXPECT_EQ(e4m3_from_float(e4m3_to_float(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(Fp8Test, EncodeMatchesNearestCodeAtBoundaries) {
  int checked = 0;
  for (float x : e4m3_test_points()) {
    ASSERT_EQ(e4m3_from_float(x), ref_e4m3_encode(x)) << "x = " << x;
    ++checked;
  }
  EXPECT_GT(checked, 40000);
}

TEST(Fp8Test, SaturatesAndKeepsNanSign) {
  EXPECT_EQ(e4m3_from_float(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(e4m3_from_float(-std::numeric_limits<float>::infinity()), 0xfe);
  EXPECT_EQ(e4m3_from_float(1e6f), 0x7e);
  EXPECT_EQ(e4m3_from_float(std::nanf("")), 0x7f);
  EXPECT_EQ(e4m3_from_float(-std::nanf("")), 0xff);
  EXPECT_EQ(e4m3_from_float(-0.f), 0x80);
}

TEST(Fp8Test, Bf16MatchesNearestValue) {
  std::vector<float> pts = e4m3_test_points();
  std::mt19937 rng(9);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 100000; ++i) {
    uint32_t u = bits(rng);
    if (i % 4 == 0) u = (u & 0xffff0000u) | 0x8000u;  // exact ties
    float f;
    std::memcpy(&f, &u, 4);
    pts.push_back(f);
  }
  for (float x : pts) {
    ASSERT_EQ(bf16_from_float(x), ref_bf16(x)) << "x = " << x;
    if (!std::isnan(x)) {
      // And back: every BF16 value converts exactly.
      const uint16_t b = bf16_from_float(x);
      ASSERT_EQ(bf16_from_float(bf16_to_float(b)), b);
    }
  }
}

// Smallest power of two >= s, by doubling/halving.
float ref_pow2_ceil(float s) {
  float p = 1.f;
  while (p < s) p *= 2.f;
  while (p / 2.f >= s) p /= 2.f;
  return p;
}

TEST(Fp8Test, TileQuantizeMatchesReference) {
  const int64_t rows = 5, cols = 300;  // 3 tiles per row, the last one 44 wide
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> x(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) x[i] = n(rng) * std::ldexp(1.f, static_cast<int>(i / cols) * 3 - 6);
  for (int64_t i = 0; i < 128; ++i) x[2 * cols + i] = 0.f;  // an all-zero tile: scale from 1e-4
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = bf16_from_float(x[i]);
  for (bool pow2 : {false, true}) {
    for (bool from_bf16 : {false, true}) {
      const int64_t tiles = fp8_num_tiles(cols);
      ASSERT_EQ(tiles, 3);
      std::vector<uint8_t> q(rows * cols);
      std::vector<float> scales(rows * tiles), back(rows * cols);
      if (from_bf16) {
        quantize_fp8_tiles(xb.data(), rows, cols, pow2, q.data(), scales.data());
      } else {
        quantize_fp8_tiles(x.data(), rows, cols, pow2, q.data(), scales.data());
      }
      dequantize_fp8_tiles(q.data(), scales.data(), rows, cols, back.data());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t t = 0; t < tiles; ++t) {
          const int64_t c0 = t * 128, c1 = std::min<int64_t>(cols, c0 + 128);
          float amax = 0;
          for (int64_t c = c0; c < c1; ++c) {
            const float v = from_bf16 ? bf16_to_float(xb[r * cols + c]) : x[r * cols + c];
            amax = std::max(amax, std::fabs(v));
          }
          float scale = std::max(amax, 1e-4f) / 448.f;
          if (pow2) scale = ref_pow2_ceil(scale);
          ASSERT_EQ(scales[r * tiles + t], scale) << r << "," << t;
          for (int64_t c = c0; c < c1; ++c) {
            const float v = from_bf16 ? bf16_to_float(xb[r * cols + c]) : x[r * cols + c];
            ASSERT_EQ(q[r * cols + c], ref_tile_code(v, scale)) << r << "," << c;
            ASSERT_EQ(back[r * cols + c], static_cast<float>(ref_e4m3_value(q[r * cols + c]) * scale));
            // Relative error of E4M3 is at most 2^-4 for normals; 2^-10 * scale absolute below.
            ASSERT_LE(std::fabs(back[r * cols + c] - v), std::max(std::fabs(v) / 16.f, scale / 1024.f) * 1.0001f);
          }
        }
      }
    }
  }
}

// Whole 128-channel tiles take the vector (AVX-512) path where the CPU has it: every code
// and scale must still equal the brute-force reference. Tiles hold the E4M3 boundary points
// (codes, midpoints and their float neighbours, saturation, NaN, inf, float subnormals)
// times a random per-tile factor, so x / scale lands on and around rounding boundaries.
TEST(Fp8Test, WholeTileQuantizeMatchesReference) {
  const std::vector<float> pts = e4m3_test_points();
  const int64_t rows = 24, cols = 1024, tiles = cols / 128;
  std::mt19937 rng(12);
  std::uniform_int_distribution<int> ex(-20, 20);
  std::uniform_real_distribution<float> fr(0.5f, 1.f);
  std::vector<float> x(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (i % 128 == 0) continue;
    x[i] = pts[(i * 7919) % pts.size()];
  }
  for (int64_t t = 0; t < rows * tiles; ++t) {
    const float f = t % 5 == 0 ? 1.f : std::ldexp(fr(rng), ex(rng));
    for (int64_t i = 0; i < 128; ++i) x[t * 128 + i] *= f;
  }
  for (int64_t i = 0; i < 128; ++i) x[3 * 128 + i] = 0.f;  // an all-zero tile
  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = bf16_from_float(x[i]);
  for (bool pow2 : {false, true}) {
    for (bool from_bf16 : {false, true}) {
      std::vector<uint8_t> q(rows * cols);
      std::vector<float> scales(rows * tiles);
      if (from_bf16) {
        quantize_fp8_tiles(xb.data(), rows, cols, pow2, q.data(), scales.data());
      } else {
        quantize_fp8_tiles(x.data(), rows, cols, pow2, q.data(), scales.data());
      }
      for (int64_t t = 0; t < rows * tiles; ++t) {
        float amax = 0;
        for (int64_t i = 0; i < 128; ++i) {
          const float v = from_bf16 ? bf16_to_float(xb[t * 128 + i]) : x[t * 128 + i];
          if (!std::isnan(v)) amax = std::max(amax, std::fabs(v));
        }
        float scale = std::max(amax, 1e-4f) / 448.f;
        if (pow2 && std::isfinite(scale)) scale = ref_pow2_ceil(scale);
        ASSERT_EQ(scales[t], scale) << "tile " << t;
        for (int64_t i = 0; i < 128; ++i) {
          const float v = from_bf16 ? bf16_to_float(xb[t * 128 + i]) : x[t * 128 + i];
          ASSERT_EQ(q[t * 128 + i], ref_tile_code(v, scale))
              << "tile " << t << " i " << i << " v " << v << " scale " << scale << " pow2 " << pow2;
        }
      }
    }
  }
}

// A tile holding +-inf has an infinite scale in both modes: finite values give (signed) zero
// codes, +-inf and NaN give the NaN code with the sign of the input, on every path (whole
// tiles: vector path; a short tile: scalar path; FP32 and BF16 inputs). On x86, inf / inf is
// a negative NaN, so a sign taken from the quotient would give 0xFF for +inf.
TEST(Fp8Test, InfiniteTileGivesNanCodesWithTheInputSign) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float head[] = {inf, -inf, -nan, nan, 1.0f, -1.0f, 0.0f, -0.0f};
  const uint8_t want[] = {0x7f, 0xff, 0xff, 0x7f, 0x00, 0x80, 0x00, 0x80};
  for (int64_t cols : {128, 100}) {
    std::vector<float> x(2 * cols, 0.5f);
    for (int64_t r = 0; r < 2; ++r)
      for (int i = 0; i < 8; ++i) x[r * cols + i] = head[i];
    std::vector<uint16_t> xb(x.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = bf16_from_float(x[i]);
    for (bool pow2 : {false, true}) {
      for (bool from_bf16 : {false, true}) {
        std::vector<uint8_t> q(x.size());
        std::vector<float> scales(2);
        if (from_bf16) {
          quantize_fp8_tiles(xb.data(), 2, cols, pow2, q.data(), scales.data());
        } else {
          quantize_fp8_tiles(x.data(), 2, cols, pow2, q.data(), scales.data());
        }
        for (int64_t r = 0; r < 2; ++r) {
          EXPECT_TRUE(std::isinf(scales[r]) && scales[r] > 0) << cols << " " << pow2 << " " << from_bf16;
          for (int i = 0; i < 8; ++i)
            EXPECT_EQ(q[r * cols + i], want[i]) << "value " << head[i] << " cols " << cols << " pow2 " << pow2
                                                << " bf16 " << from_bf16;
          EXPECT_EQ(q[r * cols + 8], 0x00) << cols;
        }
      }
    }
  }
}

TEST(Fp8Test, Pow2ScaleIsExactPowerAtOrAboveScale) {
  for (float amax : {0.f, 1e-5f, 1e-4f, 0.3f, 448.f, 896.f, 1000.f, 3.5e4f}) {
    const float s = fp8_tile_scale(amax, true), plain = fp8_tile_scale(amax, false);
    EXPECT_EQ(s, ref_pow2_ceil(plain)) << amax;
    int e;
    EXPECT_EQ(std::frexp(s, &e), 0.5f) << amax;
  }
}

}  // namespace
}  // namespace switchyard::dispatch
