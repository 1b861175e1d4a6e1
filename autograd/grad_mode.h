// Whether ops record history for backward. Off inside NoGradGuard (optimizer steps, evaluation,
// a frozen teacher) and while the backward engine runs.
#pragma once

namespace smelt {

bool grad_enabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Turns history recording back on inside a region where it is off (activation checkpointing
// recomputes a forward during backward).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace smelt
