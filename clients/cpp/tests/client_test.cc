// Tender's C++ client against a live Tender (TENDER_TARGET, TENDER_CA_FILE, TENDER_CREDENTIALS;
// tests/cpp/test_cpp_client.py starts one and runs this through ctest).
//   tender_client_test flow            the payment flow, typed errors, idempotent retries
//   tender_client_test watch-restart   a watch across a server restart (TENDER_SYNC_DIR: writes
//                                      `watching`, then waits for `restarted`)
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "tender/client.h"

namespace pay = tender::payments::v1;

namespace {

int failures = 0;

#define CHECK(condition)                                                               \
  do {                                                                                 \
    if (!(condition)) {                                                                \
      std::cerr << __FILE__ << ":" << __LINE__ << ": check failed: " #condition "\n"; \
      ++failures;                                                                      \
    }                                                                                  \
  } while (0)

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  if (!value) {
    std::cerr << name << " is not set\n";
    std::exit(2);
  }
  return value;
}

tender::ClientOptions Options() {
  tender::ClientOptions options;
  options.target = Env("TENDER_TARGET");
  options.ca_file = Env("TENDER_CA_FILE");
  options.retry.max_attempts = 10;
  options.retry.max_backoff = std::chrono::milliseconds(2000);
  return options;
}

pay::CreatePaymentRequest Request(int64_t minor, const std::string& reference = "", bool manual = false) {
  pay::CreatePaymentRequest request;
  request.mutable_amount()->set_amount_minor(minor);
  request.mutable_amount()->set_currency("EUR");
  request.set_payment_method_token("pm_card_visa");
  request.set_capture_method(manual ? pay::CAPTURE_METHOD_MANUAL : pay::CAPTURE_METHOD_AUTOMATIC);
  request.set_customer_reference(reference);
  return request;
}

// A watch read in a thread; events kept in order.
class Watcher {
 public:
  explicit Watcher(tender::Client& client) : watch_(client), thread_([this] { Run(); }) {}
  ~Watcher() {
    watch_.Cancel();
    thread_.join();
  }

  // Waits up to `seconds` for an event matching `predicate`, consuming events up to it.
  template <typename Predicate>
  bool Until(Predicate predicate, int seconds, pay::WatchPaymentsResponse* found = nullptr) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (true) {
      while (!pending_.empty()) {
        auto event = pending_.front();
        pending_.pop_front();
        seen_.push_back(event);
        if (predicate(event)) {
          if (found) *found = event;
          return true;
        }
      }
      if (ended_ || changed_.wait_until(lock, deadline) == std::cv_status::timeout) return false;
    }
  }

  std::vector<pay::WatchPaymentsResponse> seen() {
    std::lock_guard<std::mutex> lock(mutex_);
    return seen_;
  }

 private:
  void Run() {
    try {
      pay::WatchPaymentsResponse event;
      while (watch_.Next(&event)) {
        std::lock_guard<std::mutex> lock(mutex_);
        pending_.push_back(event);
        changed_.notify_all();
      }
    } catch (const std::exception& error) {
      std::cerr << "watch ended: " << error.what() << "\n";
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ended_ = true;
    changed_.notify_all();
  }

  tender::Watch watch_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<pay::WatchPaymentsResponse> pending_;
  std::vector<pay::WatchPaymentsResponse> seen_;
  bool ended_ = false;
  std::thread thread_;
};

// Marker payments until the watch shows one, so later events are surely watched.
bool Subscribed(tender::Client& client, Watcher& watcher) {
  for (int i = 0; i < 30; ++i) {
    std::string id = client.CreatePayment(Request(100)).payment_id();
    if (watcher.Until([&](const pay::WatchPaymentsResponse& e) { return e.payment_id() == id; }, 2)) return true;
  }
  return false;
}

std::string Unique(const char* prefix) { return prefix + tender::NewIdempotencyKey().substr(0, 12); }

int Flow() {
  auto credentials = tender::Credentials::FromFile(Env("TENDER_CREDENTIALS"));
  tender::Client client(Options(), credentials);
  Watcher watcher(client);
  CHECK(Subscribed(client, watcher));
  CHECK(client.tokens().issued() == 1);  // one token for every call so far

  std::string reference = Unique("cpp-");
  pay::Payment payment = client.CreatePayment(Request(1000, reference, true));
  CHECK(payment.status() == pay::PAYMENT_STATUS_REQUIRES_CAPTURE);
  CHECK(payment.amount_capturable_minor() == 1000);
  const std::string id = payment.payment_id();

  payment = client.CapturePayment(id, 600);
  CHECK(payment.status() == pay::PAYMENT_STATUS_SUCCEEDED);
  CHECK(payment.amount_captured_minor() == 600);

  tender::Refund refund = client.CreateRefund(id, 250);
  CHECK(refund.payment_id() == id && refund.amount().amount_minor() == 250);
  CHECK(client.GetRefund(refund.refund_id()).refund_id() == refund.refund_id());
  auto refunds = client.ListRefunds(id);
  CHECK(refunds.size() == 1 && refunds[0].refund_id() == refund.refund_id());

  pay::ListPaymentsRequest filter;
  filter.set_customer_reference(reference);
  auto listed = client.ListPayments(filter);
  CHECK(listed.size() == 1 && listed[0].payment_id() == id);

  auto ours = [&](pay::PaymentEventType type) {
    return [&, type](const pay::WatchPaymentsResponse& e) { return e.payment_id() == id && e.event_type() == type; };
  };
  CHECK(watcher.Until(ours(pay::PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED), 60));
  pay::WatchPaymentsResponse created;
  CHECK(watcher.Until(ours(pay::PAYMENT_EVENT_TYPE_REFUND_CREATED), 60, &created));
  CHECK(created.refund_id() == refund.refund_id());
  pay::WatchPaymentsResponse settled;
  CHECK(watcher.Until(ours(pay::PAYMENT_EVENT_TYPE_REFUND_SUCCEEDED), 60, &settled));
  CHECK(settled.payment().amount_refunded_minor() == 250);

  // Typed errors.
  try {
    client.CreateRefund(id, 351);
    CHECK(!"a refund above what is left was accepted");
  } catch (const tender::RefundExceedsCaptured& refused) {
    CHECK(refused.code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(refused.field() == "amount_minor");
  }
  try {
    client.GetPayment("pay_000000000000000000000000");
    CHECK(!"a missing payment was found");
  } catch (const tender::PaymentNotFound& missing) {
    CHECK(missing.code() == grpc::StatusCode::NOT_FOUND);
  }
  tender::Credentials reader = credentials;
  reader.scopes = {"payments:read"};
  tender::Client reading(Options(), reader);
  try {
    reading.CreatePayment(Request(500));
    CHECK(!"a read-only token created a payment");
  } catch (const tender::ScopeMissing& missing) {
    CHECK(missing.code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK(missing.metadata().at("required_scope") == "payments:write");
  }
  tender::Credentials wrong = credentials;
  wrong.client_secret = "not-the-secret";
  tender::Client impostor(Options(), wrong);
  try {
    impostor.GetPayment(id);
    CHECK(!"a wrong secret got a token");
  } catch (const tender::InvalidClient& refused) {
    CHECK(refused.code() == grpc::StatusCode::UNAUTHENTICATED);
    CHECK(std::string(refused.what()).find("not-the-secret") == std::string::npos);
  }

  // The same key gives the same payment; another request with it is refused.
  std::string key = Unique("cpp-order-");
  std::string again = Unique("cpp-");
  std::string first = client.CreatePayment(Request(700, again), key).payment_id();
  CHECK(client.CreatePayment(Request(700, again), key).payment_id() == first);
  try {
    client.CreatePayment(Request(701, again), key);
    CHECK(!"a reused key was accepted for another request");
  } catch (const tender::IdempotencyKeyReused&) {
  }
  filter.set_customer_reference(again);
  CHECK(client.ListPayments(filter).size() == 1);

  // Tokens are refreshed before they expire: a clock moved into the refresh window.
  std::atomic<int64_t> shift{0};
  tender::TokenSource tokens(
      grpc::CreateChannel(Options().target,
                          grpc::SslCredentials([] {
                            grpc::SslCredentialsOptions tls;
                            std::ifstream file(Env("TENDER_CA_FILE"));
                            tls.pem_root_certs.assign(std::istreambuf_iterator<char>(file), {});
                            return tls;
                          }())),
      credentials, std::chrono::seconds(10),
      [&] { return std::chrono::system_clock::now() + std::chrono::seconds(shift.load()); });
  std::string token = tokens.Token();
  CHECK(tokens.Token() == token && tokens.issued() == 1);
  auto left = std::chrono::duration_cast<std::chrono::seconds>(tokens.expire_time() - std::chrono::system_clock::now());
  shift = left.count() - 1;  // one second before expiry: inside the refresh window
  CHECK(tokens.Token() != token && tokens.issued() == 2);

  std::cout << (failures == 0 ? "flow: ok\n" : "flow: failed\n");
  return failures == 0 ? 0 : 1;
}

int WatchRestart() {
  std::string sync = Env("TENDER_SYNC_DIR");
  tender::Client client(Options(), tender::Credentials::FromFile(Env("TENDER_CREDENTIALS")));
  Watcher watcher(client);
  CHECK(Subscribed(client, watcher));
  std::string before = client.CreatePayment(Request(410)).payment_id();
  CHECK(watcher.Until([&](const pay::WatchPaymentsResponse& e) { return e.payment_id() == before; }, 60));
  std::ofstream(sync + "/watching") << "watching\n";
  // The test stops Tender and starts it again; events made after that reach the same watch.
  for (int i = 0; i < 1200 && !std::ifstream(sync + "/restarted"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  CHECK(std::ifstream(sync + "/restarted").good());
  std::string after = client.CreatePayment(Request(420)).payment_id();
  pay::WatchPaymentsResponse succeeded;
  CHECK(watcher.Until(
      [&](const pay::WatchPaymentsResponse& e) {
        return e.payment_id() == after && e.event_type() == pay::PAYMENT_EVENT_TYPE_PAYMENT_SUCCEEDED;
      },
      120, &succeeded));
  CHECK(succeeded.payment().amount().amount_minor() == 420);
  std::set<std::string> cursors;
  bool created = false;
  for (const auto& event : watcher.seen()) {
    CHECK(cursors.insert(event.cursor()).second);  // nothing delivered twice
    created = created || (event.payment_id() == after && event.event_type() == pay::PAYMENT_EVENT_TYPE_PAYMENT_CREATED);
  }
  CHECK(created);
  std::cout << (failures == 0 ? "watch-restart: ok\n" : "watch-restart: failed\n");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "flow") return Flow();
    if (mode == "watch-restart") return WatchRestart();
  } catch (const std::exception& error) {
    std::cerr << "unexpected: " << error.what() << "\n";
    return 1;
  }
  std::cerr << "usage: " << argv[0] << " flow|watch-restart\n";
  return 64;
}
