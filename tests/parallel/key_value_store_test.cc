#include "parallel/key_value_store.h"

#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "parallel/grpc_key_value_store.h"
#include "parallel/rendezvous_service.h"
#include "tests/parallel/rendezvous_test_server.h"

namespace gemmaserve::parallel {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(InMemoryKeyValueStoreTest, GetWaitsForALaterSet) {
  InMemoryKeyValueStore store;
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(store.Set("b", "2").ok());
  });
  ASSERT_TRUE(store.Set("a", "1").ok());
  absl::StatusOr<std::vector<std::string>> values = store.Get({"b", "a"}, absl::Seconds(30));
  setter.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre("2", "1"));
}

TEST(InMemoryKeyValueStoreTest, GetTimesOutNamingOnlyTheMissingKeys) {
  InMemoryKeyValueStore store;
  ASSERT_TRUE(store.Set("present", "x").ok());
  absl::StatusOr<std::vector<std::string>> values =
      store.Get({"present", "missing"}, absl::Milliseconds(30));
  ASSERT_EQ(values.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(values.status().message(), HasSubstr("[missing]"));
  EXPECT_THAT(values.status().message(), Not(HasSubstr("present")));
}

TEST(InMemoryKeyValueStoreTest, SetReplacesAndKeepsBinaryValues) {
  InMemoryKeyValueStore store;
  const std::string binary("\0\xff\x01", 3);
  ASSERT_TRUE(store.Set("k", "old").ok());
  ASSERT_TRUE(store.Set("k", binary).ok());
  absl::StatusOr<std::vector<std::string>> values = store.Get({"k"}, absl::Seconds(1));
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(binary));
  EXPECT_EQ(store.num_keys(), 1);
}

TEST(GrpcKeyValueStoreTest, RoundTripsUnderItsNamespace) {
  RendezvousTestServer server;
  GrpcKeyValueStore store(server.NewChannel(), "group-7");
  ASSERT_TRUE(store.Set("k", std::string("v\0w", 3)).ok());
  absl::StatusOr<std::vector<std::string>> values = store.Get({"k"}, absl::Seconds(10));
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre(std::string("v\0w", 3)));
  // The service sees the namespaced key.
  values = server.rendezvous().store().Get({"group-7/k"}, absl::Seconds(1));
  ASSERT_TRUE(values.ok()) << values.status();
}

TEST(GrpcKeyValueStoreTest, GetWaitsForASetFromAnotherClient) {
  RendezvousTestServer server;
  GrpcKeyValueStore reader(server.NewChannel(), "g");
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(100));
    GrpcKeyValueStore store(server.NewChannel(), "g");
    ASSERT_TRUE(store.Set("late", "here").ok());
  });
  absl::StatusOr<std::vector<std::string>> values = reader.Get({"late"}, absl::Seconds(10));
  writer.join();
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_THAT(*values, ElementsAre("here"));
}

TEST(GrpcKeyValueStoreTest, GetTimesOutWithDeadlineExceededNamingTheKey) {
  RendezvousTestServer server;
  GrpcKeyValueStore store(server.NewChannel(), "g");
  absl::StatusOr<std::vector<std::string>> values =
      store.Get({"never"}, absl::Milliseconds(100));
  ASSERT_EQ(values.status().code(), absl::StatusCode::kDeadlineExceeded) << values.status();
  EXPECT_THAT(values.status().message(), HasSubstr("g/never"));
}

TEST(GrpcKeyValueStoreTest, SetGivesUpWithUnavailableWhenNoCoordinatorAnswers) {
  // Port 1 on loopback: nothing listens there, so every attempt is refused (UNAVAILABLE).
  GrpcRetryOptions options;
  options.initial_backoff = absl::Milliseconds(10);
  options.set_timeout = absl::Milliseconds(300);
  GrpcKeyValueStore store(grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials()),
                          "g", options);
  const absl::Status status = store.Set("k", "v");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("g/k"));
}

TEST(RendezvousServiceTest, RejectsMalformedRequests) {
  RendezvousOptions options;
  options.max_value_bytes = 4;
  options.max_keys = 1;
  RendezvousService service(options);
  internal::v1::StoreSetRequest set;
  internal::v1::StoreSetResponse set_response;
  EXPECT_EQ(service.StoreSet(set, &set_response).error_code(), grpc::INVALID_ARGUMENT);
  set.set_key("k");
  set.set_value("12345");
  EXPECT_EQ(service.StoreSet(set, &set_response).error_code(), grpc::INVALID_ARGUMENT);
  set.set_value("1234");
  EXPECT_TRUE(service.StoreSet(set, &set_response).ok());
  set.set_key("k2");
  EXPECT_EQ(service.StoreSet(set, &set_response).error_code(), grpc::RESOURCE_EXHAUSTED);

  internal::v1::StoreGetRequest get;
  internal::v1::StoreGetResponse get_response;
  get.add_keys("k");
  get.set_timeout_ms(-1);
  EXPECT_EQ(service.StoreGet(get, &get_response).error_code(), grpc::INVALID_ARGUMENT);
  get.set_timeout_ms(1000);
  ASSERT_TRUE(service.StoreGet(get, &get_response).ok());
  EXPECT_THAT(get_response.values(), ElementsAre("1234"));
}

}  // namespace
}  // namespace gemmaserve::parallel
