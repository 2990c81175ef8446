// The device query on whatever machine runs the tests: a list (possibly empty) or a clear error,
// never a crash. The GPU test skips cleanly where no device is found.
#include "gtest/gtest.h"
#include "kernels/device.h"

namespace gemmaserve::kernels {
namespace {

TEST(DeviceQueryTest, ReportsDevicesOrAClearError) {
  absl::StatusOr<std::vector<CudaDevice>> devices = ListCudaDevices();
  if (!BuiltWithCuda()) {
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kFailedPrecondition);
    return;
  }
  if (!devices.ok()) {
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_NE(devices.status().message().find("cudaGetDeviceCount"), std::string::npos);
  }
}

TEST(DeviceQueryTest, RejectsAnOrdinalPastTheLastDevice) {
  EXPECT_FALSE(CheckCudaDevice(1 << 20).ok());
}

}  // namespace
}  // namespace gemmaserve::kernels
