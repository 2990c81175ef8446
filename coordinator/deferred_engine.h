// DeferredEngine: stands in for the EngineLoop while the workers are still starting, so the API
// servers (and their /health) can come up first. Until Set() it is not ready and refuses requests
// with UNAVAILABLE; afterwards it forwards everything to the engine it was given.
//
// Thread-safety: every method may be called from any thread; Set() once.
#pragma once

#include <atomic>

#include "coordinator/engine.h"

namespace gemmaserve::coordinator {

class DeferredEngine final : public Engine {
 public:
  // `engine` must outlive this object.
  void Set(Engine* engine) { engine_.store(engine); }

  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(Request request) override {
    Engine* engine = engine_.load();
    if (engine == nullptr) return absl::UnavailableError("the workers are still starting");
    return engine->Submit(std::move(request));
  }
  void Abort(const std::string& request_id) override {
    if (Engine* engine = engine_.load(); engine != nullptr) engine->Abort(request_id);
  }
  LoadInfo Load() const override {
    Engine* engine = engine_.load();
    return engine == nullptr ? LoadInfo() : engine->Load();
  }
  bool Ready() const override {
    Engine* engine = engine_.load();
    return engine != nullptr && engine->Ready();
  }

 private:
  std::atomic<Engine*> engine_{nullptr};
};

}  // namespace gemmaserve::coordinator
