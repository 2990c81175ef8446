// CHECK macros for invariants: a failed CHECK is a bug in gemmaserve, never bad input, so it logs
// the condition and its location and aborts. Input errors are absl::Status (status_macros.h).
//
//   CHECK(cond) << "extra context " << value;
//   CHECK_EQ(a, b) << ...;   // also CHECK_NE, CHECK_LT, CHECK_LE, CHECK_GT, CHECK_GE
#pragma once

#include <sstream>

#include "absl/status/status.h"
#include <string>

namespace gemmaserve::internal {

// Collects the streamed message and aborts in its destructor.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Lets a `CHECK(x) << ...` expression have type void in both branches of the ternary.
struct Voidify {
  void operator&(std::ostream&) {}
};

}  // namespace gemmaserve::internal

#define CHECK(cond)                               \
  (cond) ? (void)0                                \
         : ::gemmaserve::internal::Voidify() &    \
               ::gemmaserve::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define GS_CHECK_OP_(a, b, op) \
  CHECK((a)op(b)) << "(" << (a) << " vs " << (b) << ") "

#define CHECK_EQ(a, b) GS_CHECK_OP_(a, b, ==)
#define CHECK_NE(a, b) GS_CHECK_OP_(a, b, !=)
#define CHECK_LT(a, b) GS_CHECK_OP_(a, b, <)
#define CHECK_LE(a, b) GS_CHECK_OP_(a, b, <=)
#define CHECK_GT(a, b) GS_CHECK_OP_(a, b, >)
#define CHECK_GE(a, b) GS_CHECK_OP_(a, b, >=)

// CHECK that an absl::Status is OK; for start-up steps whose failure is a bug.
#define CHECK_OK(expr)                                   \
  do {                                                   \
    const ::absl::Status gs_check_status_ = (expr);      \
    CHECK(gs_check_status_.ok()) << gs_check_status_;    \
  } while (false)
