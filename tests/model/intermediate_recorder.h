// Records the named intermediates a Gemma4Model reports to its observer (copied to the host, in
// the order the forward produces them) and finds the first (name, layer) at which two recordings
// of the same step part by more than a tolerance: how two implementations of a step (the CPU
// kernels today, the CUDA backend against the CPU later) are compared intermediate by
// intermediate instead of only at the logits. Test-only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/gemma4.h"
#include "ops/copy.h"

namespace gemmaserve::testing {

class IntermediateRecorder {
 public:
  struct Entry {
    std::string name;
    int64_t layer = 0;
    std::vector<float> values;
  };

  // An observer that appends to this recorder, which must outlive its use.
  model::Gemma4Model::Observer Observer() {
    return [this](const std::string& name, int64_t layer, const Tensor& value) {
      const Tensor host = ops::ToHost(value).ToF32();  // a copy: the workspace moves on
      entries_.push_back({name, layer,
                          std::vector<float>(host.data<float>(),
                                             host.data<float>() + host.numel())});
    };
  }

  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

struct Divergence {
  std::string name;
  int64_t layer = 0;
  double max_abs_diff = 0;  // INFINITY when the two disagree on shape or order
};

// The first intermediate of `a` (in forward order) whose values differ from `b`'s by more than
// `tolerance` × max(1, max |a|); nothing when every one agrees.
inline std::optional<Divergence> FirstDivergence(const IntermediateRecorder& a,
                                                 const IntermediateRecorder& b, double tolerance) {
  const auto& x = a.entries();
  const auto& y = b.entries();
  for (size_t i = 0; i < std::max(x.size(), y.size()); ++i) {
    if (i >= x.size() || i >= y.size() || x[i].name != y[i].name || x[i].layer != y[i].layer ||
        x[i].values.size() != y[i].values.size()) {
      const auto& e = i < x.size() ? x[i] : y[i];
      return Divergence{e.name, e.layer, INFINITY};
    }
    double worst = 0, scale = 1;
    for (size_t j = 0; j < x[i].values.size(); ++j) {
      const double diff = std::fabs(double{x[i].values[j]} - y[i].values[j]);
      worst = std::isnan(diff) ? INFINITY : std::max(worst, diff);
      scale = std::max(scale, std::fabs(double{x[i].values[j]}));
    }
    if (worst > tolerance * scale) return Divergence{x[i].name, x[i].layer, worst};
  }
  return std::nullopt;
}

}  // namespace gemmaserve::testing
