// The Linear back-end slot and the FP8 recipe back-end (see linear_backend.h).
#include "switchyard/common/error.h"
#include "switchyard/trainer/train/linear_backend.h"

namespace switchyard::trainer {

namespace {
LinearBackend* g_backend = nullptr;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
}  // namespace

LinearBackend* linear_backend() { return g_backend; }
void set_linear_backend(LinearBackend* backend) { g_backend = backend; }

bool fp8_recipe_covers(const std::string& name, int64_t rank) {
  if (rank != 2 || !ends_with(name, ".weight")) return false;
  if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return false;
  if (ends_with(name, ".mlp.gate.weight")) return false;
  return true;
}

Fp8Linear::Fp8Linear(const ParameterSet<float>& params, Fp8Options options) : options_(options) {
  SY_REQUIRE(linear_backend() == nullptr, "fp8: another Linear back-end is already installed");
  for (const auto& p : params.all()) {
    if (!fp8_recipe_covers(p->name, static_cast<int64_t>(p->shape.size()))) continue;
    weights_.insert(p->value.data());
    grads_.insert(p->grad.data());
  }
  set_linear_backend(this);
}

Fp8Linear::~Fp8Linear() {
  if (linear_backend() == this) set_linear_backend(nullptr);
}

bool Fp8Linear::forward(const float* x, const float* W, int64_t n, int64_t in, int64_t out, float* y) {
  if (!weights_.count(W)) return false;
  fp8_linear_forward(x, W, n, in, out, y, options_);
  ++fp8_gemms_;
  return true;
}

bool Fp8Linear::backward_input(const float* dy, const float* W, int64_t n, int64_t in, int64_t out, float* dx,
                               bool accumulate) {
  if (!weights_.count(W)) return false;
  fp8_linear_backward_input(dy, W, n, in, out, dx, accumulate, options_);
  ++fp8_gemms_;
  return true;
}

bool Fp8Linear::backward_weight(const float* dy, const float* x, int64_t n, int64_t in, int64_t out, float* dW) {
  if (!grads_.count(dW)) return false;
  fp8_linear_backward_weight(dy, x, n, in, out, dW, options_);
  ++fp8_gemms_;
  return true;
}

}  // namespace switchyard::trainer
