// The GPU model in a build without CUDA: every entry point throws Unsupported (the tests
// skip, sy-gpu-train-perf reports the error).
#include "switchyard/common/error.h"
#include "switchyard/trainer/cuda/fp8_blocks.h"
#include "switchyard/trainer/cuda/model.h"
#include "switchyard/trainer/cuda/train_perf.h"

namespace switchyard::trainer::gpu {

namespace {
[[noreturn]] void no_cuda(const char* what) {
  SY_THROW(Unsupported, "gpu model: " << what << " needs the CUDA backend (configure with -DSY_CUDA=ON)");
}
}  // namespace

const char* precision_name(Precision p) {
  return p == Precision::kFloat32 ? "fp32" : p == Precision::kBfloat16 ? "bf16" : "fp8";
}
Precision precision_from_name(const std::string& name) {
  if (name == "fp32") return Precision::kFloat32;
  if (name == "bf16") return Precision::kBfloat16;
  if (name == "fp8") return Precision::kFp8;
  SY_THROW(InvalidArgument, "gpu model: unknown precision \"" << name << "\" (known: fp32, bf16, fp8)");
}

struct Model::Impl {};
Model::Model(const ModelConfig&, Precision) { no_cuda("Model"); }
Model::~Model() = default;
const ModelConfig& Model::config() const { no_cuda("config"); }
Precision Model::precision() const { no_cuda("precision"); }
int64_t Model::num_parameters() const { no_cuda("num_parameters"); }
void Model::init_random(uint64_t, double) { no_cuda("init_random"); }
void Model::load_weights(const TensorMap&) { no_cuda("load_weights"); }
TensorMap Model::weights() const { no_cuda("weights"); }
TensorMap Model::gradients() const { no_cuda("gradients"); }
Losses Model::forward(const int64_t*, int64_t, int64_t) { no_cuda("forward"); }
void Model::backward() { no_cuda("backward"); }
void Model::zero_grad() { no_cuda("zero_grad"); }
void Model::set_optimizer(const AdamWConfig&) { no_cuda("set_optimizer"); }
void Model::adamw_step(double) { no_cuda("adamw_step"); }
int64_t Model::optimizer_steps() const { no_cuda("optimizer_steps"); }
std::vector<int64_t> Model::moe_layer_indices() const { no_cuda("moe_layer_indices"); }
const std::vector<double>& Model::expert_counts(int64_t) const { no_cuda("expert_counts"); }
std::vector<float> Model::expert_bias(int64_t) const { no_cuda("expert_bias"); }
void Model::update_expert_biases(double) { no_cuda("update_expert_biases"); }
const float* Model::parameter_slab() const { no_cuda("parameter_slab"); }
const float* Model::gradient_slab() const { no_cuda("gradient_slab"); }

void quantize_fp8_blocks(const float*, int64_t, int64_t, bool, uint8_t*, float*, cuda::StreamHandle) {
  no_cuda("quantize_fp8_blocks");
}

double train_step_flops(const ModelConfig&, int64_t, int64_t) { no_cuda("train_step_flops"); }
TrainPerfReport run_train_perf(const TrainPerfOptions&) { no_cuda("sy-gpu-train-perf"); }
std::string TrainPerfReport::text() const { return ""; }
std::string TrainPerfReport::json() const { return "{}"; }

}  // namespace switchyard::trainer::gpu
