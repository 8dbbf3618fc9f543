// Named model parameters with their gradients (HF DeepSeek-V3 names).
//
// Ownership: a ParameterSet owns every Parameter; pointers stay valid for its lifetime
// (layers hold them). Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace switchyard::trainer {

template <class T>
struct Parameter {
  std::string name;             // e.g. "model.layers.0.self_attn.q_a_proj.weight"
  std::vector<int64_t> shape;   // [out, in] for Linear weights, [c] for norms
  std::vector<T> value;         // row-major
  std::vector<T> grad;          // same shape; accumulated by backward
  int64_t numel() const { return static_cast<int64_t>(value.size()); }
};

template <class T>
class ParameterSet {
 public:
  // Registers a zero-initialised parameter; throws InvalidArgument on a duplicate name.
  Parameter<T>* add(const std::string& name, std::vector<int64_t> shape);
  // nullptr if absent.
  Parameter<T>* find(const std::string& name) const;
  // Throws InvalidArgument naming the parameter if absent.
  Parameter<T>& at(const std::string& name) const;
  // In registration order (embedding, layers in order, final norm, head).
  const std::vector<std::unique_ptr<Parameter<T>>>& all() const { return params_; }
  int64_t total_numel() const;
  void zero_grad();

 private:
  std::vector<std::unique_ptr<Parameter<T>>> params_;
  std::map<std::string, Parameter<T>*> by_name_;
};

}  // namespace switchyard::trainer
