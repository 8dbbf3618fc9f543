// Row kernels of combine (dispatch/src/payload.h, private): accumulate_row, add_row and
// store_row against per-element references written here (bf16 -> float by shifting the
// bits, acc + scale * v computed in double and rounded twice as float ops, round to nearest
// even by comparing the two BF16 neighbours in double). Lengths that are not multiples of
// the 16-lane vector, odd offsets, rounding ties, NaN, +-inf, subnormals, overflow to inf.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "payload.h"

namespace {

using namespace switchyard;
using namespace switchyard::dispatch;

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Nearest BF16 (ties to even), NaN -> quiet NaN with the sign and the top payload bits.
uint16_t ref_bf16(float x) {
  const uint32_t u = float_to_bits(x);
  if (std::isnan(x)) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);  // truncation toward zero
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double a = std::fabs(static_cast<double>(bits_to_float(static_cast<uint32_t>(lo) << 16)));
  // Past the largest finite BF16 the next value up is 2^128 (it rounds to inf).
  const double b = (hi & 0x7fff) == 0x7f80 ? std::ldexp(1.0, 128)
                                          : std::fabs(static_cast<double>(bits_to_float(static_cast<uint32_t>(hi) << 16)));
  const double v = std::fabs(static_cast<double>(x));
  if (std::isinf(x)) return lo;
  if (v - a < b - v) return lo;
  if (v - a > b - v) return hi;
  return (lo & 1) ? hi : lo;
}

// Interesting float bit patterns plus random ones.
std::vector<float> test_values(size_t n, uint32_t seed) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> v = {0.f, -0.f, 1.f, -1.f, inf, -inf, nan, -nan, 3.0e38f, -3.4e38f, 1e-40f, -1e-45f,
                          bits_to_float(0x3f808000u),   // tie, even -> down
                          bits_to_float(0x3f818000u),   // tie, odd -> up
                          bits_to_float(0x3f807fffu), bits_to_float(0x3f808001u),
                          bits_to_float(0x7f7fffffu),   // rounds to inf
                          bits_to_float(0x7fa00001u),   // signalling NaN
                          bits_to_float(0xffc00001u)};
  std::mt19937 rng(seed);
  while (v.size() < n) v.push_back(bits_to_float(static_cast<uint32_t>(rng())));
  v.resize(n);
  return v;
}

TEST(RowKernelsTest, StoreRowBf16MatchesNearestEven) {
  for (int64_t n : {0, 1, 15, 16, 17, 100, 7168, 7171}) {
    const std::vector<float> v = test_values(n + 3, 11 + n);
    for (int64_t off : {0, 3}) {
      std::vector<uint16_t> out(n + 1, 0xdead);
      detail::store_row(v.data() + off, n, comm::DataType::kBfloat16, reinterpret_cast<uint8_t*>(out.data()));
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(out[i], ref_bf16(v[off + i])) << "n " << n << " i " << i << " bits " << std::hex
                                                << float_to_bits(v[off + i]);
      EXPECT_EQ(out[n], 0xdead) << "wrote past the row, n " << n;
    }
  }
}

TEST(RowKernelsTest, AccumulateAndAddRowsMatchElementwiseFloatOps) {
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 3.f);
  for (int64_t n : {1, 15, 16, 33, 7168, 7175}) {
    std::vector<uint16_t> row(n);
    for (auto& b : row) b = static_cast<uint16_t>(float_to_bits(g(rng)) >> 16);
    std::vector<float> rowf(n);
    for (int64_t i = 0; i < n; ++i) rowf[i] = g(rng);
    if (n > 4) {  // specials in the BF16 row
      row[0] = 0x7f80;  // +inf
      row[1] = 0x0001;  // subnormal
      row[2] = 0xffc0;  // -NaN
    }
    for (float scale : {1.0f, 0.3f, -2.5f}) {
      std::vector<float> acc(n), want(n);
      for (int64_t i = 0; i < n; ++i) acc[i] = want[i] = g(rng);
      detail::accumulate_row(reinterpret_cast<const uint8_t*>(row.data()), comm::DataType::kBfloat16, n, scale,
                             acc.data());
      for (int64_t i = 0; i < n; ++i) {
        const float prod = static_cast<float>(static_cast<double>(scale) * bits_to_float(uint32_t(row[i]) << 16));
        want[i] = static_cast<float>(static_cast<double>(want[i]) + prod);
      }
      for (int64_t i = 0; i < n; ++i)
        ASSERT_TRUE(float_to_bits(acc[i]) == float_to_bits(want[i]) || (std::isnan(acc[i]) && std::isnan(want[i])))
            << "bf16 accumulate n " << n << " i " << i << " scale " << scale << ": " << acc[i] << " vs " << want[i];
      detail::accumulate_row(reinterpret_cast<const uint8_t*>(rowf.data()), comm::DataType::kFloat32, n, scale,
                             acc.data());
      for (int64_t i = 0; i < n; ++i)
        want[i] = static_cast<float>(static_cast<double>(want[i]) +
                                     static_cast<float>(static_cast<double>(scale) * rowf[i]));
      for (int64_t i = 0; i < n; ++i)
        ASSERT_TRUE(float_to_bits(acc[i]) == float_to_bits(want[i]) || (std::isnan(acc[i]) && std::isnan(want[i])))
            << "fp32 accumulate n " << n << " i " << i;
      detail::add_row(reinterpret_cast<const uint8_t*>(row.data()), comm::DataType::kBfloat16, n, acc.data());
      for (int64_t i = 0; i < n; ++i)
        want[i] = static_cast<float>(static_cast<double>(want[i]) + bits_to_float(uint32_t(row[i]) << 16));
      for (int64_t i = 0; i < n; ++i)
        ASSERT_TRUE(float_to_bits(acc[i]) == float_to_bits(want[i]) || (std::isnan(acc[i]) && std::isnan(want[i])))
            << "bf16 add n " << n << " i " << i;
    }
  }
}

// A sum's first term: accumulate_row / add_row onto a +0 fill give (+0) + scale * x and
// (+0) + x (-0 becomes +0), for BF16 and FP32 rows with -0, NaN, inf and subnormals, at
// lengths around the 16-lane vector; the reference is per element in double, rounded as
// float ops.
TEST(RowKernelsTest, FirstTermOntoZeroFillMatchesReference) {
  for (int64_t n : {1, 15, 16, 17, 1024, 7175}) {
    const std::vector<float> f32 = test_values(n, 21 + n);
    std::vector<uint16_t> bf16(n);
    for (int64_t i = 0; i < n; ++i) bf16[i] = static_cast<uint16_t>(float_to_bits(f32[i]) >> 16);
    for (comm::DataType t : {comm::DataType::kFloat32, comm::DataType::kBfloat16}) {
      const uint8_t* row = t == comm::DataType::kFloat32 ? reinterpret_cast<const uint8_t*>(f32.data())
                                                          : reinterpret_cast<const uint8_t*>(bf16.data());
      auto value = [&](int64_t i) {
        return t == comm::DataType::kFloat32 ? f32[i] : bits_to_float(uint32_t(bf16[i]) << 16);
      };
      for (float scale : {1.0f, -0.75f, 0.0f}) {
        std::vector<float> filled(n + 1, 42.0f);
        std::fill(filled.begin(), filled.begin() + n, 0.0f);
        detail::accumulate_row(row, t, n, scale, filled.data());
        for (int64_t i = 0; i < n; ++i) {
          const float want = static_cast<float>(
              0.0 + static_cast<double>(static_cast<float>(static_cast<double>(scale) * value(i))));
          ASSERT_TRUE(float_to_bits(filled[i]) == float_to_bits(want) || (std::isnan(filled[i]) && std::isnan(want)))
              << "accumulate_row onto +0, n " << n << " i " << i << ": " << filled[i] << " vs " << want;
        }
        EXPECT_EQ(filled[n], 42.0f) << "wrote past the row";
      }
      std::vector<float> filled(n, 0.0f);
      detail::add_row(row, t, n, filled.data());
      for (int64_t i = 0; i < n; ++i) {
        const float want = static_cast<float>(0.0 + static_cast<double>(value(i)));
        ASSERT_TRUE(float_to_bits(filled[i]) == float_to_bits(want) || (std::isnan(filled[i]) && std::isnan(want)))
            << "add_row onto +0, n " << n << " i " << i;
      }
    }
  }
}

// sum_rows forms a whole sum in one pass: the same bits as a +0 fill then accumulate_row /
// add_row term by term (the per-term kernels checked above), for 0-5 rows of BF16 and FP32 with specials, lengths around the 16- and 64-lane
// blocks, scaled and unscaled; also with acc at the address of the first row. NaN results
// compare as NaN (their payload is not specified: the compiler may swap an add's operands).
TEST(RowKernelsTest, SumRowsEqualsTermByTermSum) {
  for (int64_t n : {1, 15, 16, 17, 63, 64, 65, 1024, 1031}) {
    for (comm::DataType t : {comm::DataType::kFloat32, comm::DataType::kBfloat16}) {
      const size_t eb = t == comm::DataType::kFloat32 ? 4 : 2;
      std::vector<std::vector<uint8_t>> data(5, std::vector<uint8_t>(n * eb));
      for (int c = 0; c < 5; ++c) {
        const std::vector<float> f = test_values(n, 100 * c + n);
        std::mt19937 rng(c + 1);
        std::normal_distribution<float> g(0.f, 2.f);
        for (int64_t i = 0; i < n; ++i) {
          const float v = i % 7 == 3 ? f[i % f.size()] : g(rng);  // mostly finite, some specials
          if (t == comm::DataType::kFloat32) {
            std::memcpy(data[c].data() + i * 4, &v, 4);
          } else {
            const uint16_t b = static_cast<uint16_t>(float_to_bits(v) >> 16);
            std::memcpy(data[c].data() + i * 2, &b, 2);
          }
        }
      }
      const float scales[5] = {0.5f, -1.25f, 3.0f, 0.0f, -0.1f};
      for (int count = 0; count <= 5; ++count) {
        std::vector<const uint8_t*> rows(count);
        for (int c = 0; c < count; ++c) rows[c] = data[c].data();
        for (bool scaled : {false, true}) {
          std::vector<float> want(n, 0.0f), got(n + 1, 42.0f);
          for (int c = 0; c < count; ++c) {
            if (scaled) {
              detail::accumulate_row(rows[c], t, n, scales[c], want.data());
            } else {
              detail::add_row(rows[c], t, n, want.data());
            }
          }
          detail::sum_rows(rows.data(), scaled ? scales : nullptr, count, t, n, got.data());
          for (int64_t i = 0; i < n; ++i)  // NaN: any NaN (the compiler may swap an add's operands)
            ASSERT_TRUE(float_to_bits(got[i]) == float_to_bits(want[i]) || (std::isnan(got[i]) && std::isnan(want[i])))
                << "n " << n << " dtype bytes " << eb << " count " << count << " scaled " << scaled << " i " << i;
          EXPECT_EQ(got[n], 42.0f) << "wrote past the row";
          if (t == comm::DataType::kFloat32 && count > 0) {  // in place: acc is rows[0]
            std::vector<uint8_t> first = data[0];
            std::vector<const uint8_t*> in_place = rows;
            in_place[0] = first.data();
            detail::sum_rows(in_place.data(), scaled ? scales : nullptr, count, t, n,
                             reinterpret_cast<float*>(first.data()));
            for (int64_t i = 0; i < n; ++i) {
              float v;
              std::memcpy(&v, first.data() + i * 4, 4);
              ASSERT_TRUE(float_to_bits(v) == float_to_bits(got[i]) || (std::isnan(v) && std::isnan(got[i])))
                  << "in place, n " << n << " count " << count << " i " << i;
            }
          }
        }
      }
    }
  }
}

}  // namespace
