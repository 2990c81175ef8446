// Runs only where a GPU is visible; elsewhere every test skips with the reason.
#include "gtest/gtest.h"
#include "kernels/device.h"

namespace gemmaserve::kernels {
namespace {

TEST(GpuDeviceTest, EveryVisibleDeviceHasMemoryAndACapability) {
  absl::StatusOr<std::vector<CudaDevice>> devices = ListCudaDevices();
  if (!devices.ok() || devices->empty()) {
    GTEST_SKIP() << "no CUDA device: "
                 << (devices.ok() ? std::string("none visible") : std::string(devices.status().message()));
  }
  for (const CudaDevice& device : *devices) {
    EXPECT_GT(device.memory_bytes, 0) << device.name;
    EXPECT_GE(device.compute_capability_major, 7) << device.name;
    EXPECT_TRUE(CheckCudaDevice(device.ordinal).ok());
  }
}

}  // namespace
}  // namespace gemmaserve::kernels
