// Helpers shared by the libFuzzer targets in this directory. Test-only.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include "coordinator/api/served_model.h"

namespace gemmaserve::fuzz {

// The tiny dense checkpoint's tokenizer, chat template and defaults, loaded once. The targets run
// from the repository root (scripts/fuzz.sh), where tests/data is.
inline const coordinator::api::ServedModel& TinyModel() {
  static const coordinator::api::ServedModel* model = [] {
    auto loaded = coordinator::api::ServedModel::Load("tests/data/gemma4-tiny-dense", "tiny");
    if (!loaded.ok()) std::abort();  // not a finding: the fuzzer runs in the wrong directory
    return loaded->release();
  }();
  return *model;
}

}  // namespace gemmaserve::fuzz
