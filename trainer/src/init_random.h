// The model's deterministic initialisation, shared by the CPU Model (model.cc) and the GPU
// model (cuda/model/model.cc) so that both draw the same numbers for the same seed: matrices
// ~ N(0, std^2) from splitmix64 + Box-Muller (independent of the C++ library), norm weights 1.
// Parameters are filled in the order the caller visits them.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace switchyard::trainer {

class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : state_(seed) {}
  double next() {
    double u1 = (static_cast<double>(bits() >> 11) + 0.5) * 0x1.0p-53;
    double u2 = static_cast<double>(bits() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  uint64_t bits() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

inline bool is_norm_weight(const std::string& name) { return name.find("norm.weight") != std::string::npos; }

// v[0, n) of parameter `name`: 1 for a norm weight, else the next n samples of rng times std.
template <class T>
void init_parameter(const std::string& name, NormalRng& rng, double std, T* v, size_t n) {
  const bool norm = is_norm_weight(name);
  for (size_t i = 0; i < n; ++i) v[i] = norm ? T(1) : T(rng.next() * std);
}

}  // namespace switchyard::trainer
