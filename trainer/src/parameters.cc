// ParameterSet: registry of named parameters.
#include "switchyard/trainer/parameters.h"

#include <algorithm>

#include "switchyard/common/error.h"

namespace switchyard::trainer {

template <class T>
Parameter<T>* ParameterSet<T>::add(const std::string& name, std::vector<int64_t> shape) {
  SY_REQUIRE(by_name_.count(name) == 0, "parameters: duplicate parameter \"" << name << "\"");
  auto p = std::make_unique<Parameter<T>>();
  p->name = name;
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  p->shape = std::move(shape);
  p->value.assign(n, T(0));
  p->grad.assign(n, T(0));
  Parameter<T>* raw = p.get();
  params_.push_back(std::move(p));
  by_name_[name] = raw;
  return raw;
}

template <class T>
Parameter<T>* ParameterSet<T>::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

template <class T>
Parameter<T>& ParameterSet<T>::at(const std::string& name) const {
  Parameter<T>* p = find(name);
  SY_REQUIRE(p != nullptr, "parameters: no parameter named \"" << name << "\"");
  return *p;
}

template <class T>
int64_t ParameterSet<T>::total_numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p->numel();
  return n;
}

template <class T>
void ParameterSet<T>::zero_grad() {
  for (auto& p : params_) std::fill(p->grad.begin(), p->grad.end(), T(0));
}

template class ParameterSet<float>;
template class ParameterSet<double>;

}  // namespace switchyard::trainer
