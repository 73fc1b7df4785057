// Tender's C++ client: payments and refunds over TLS, with access tokens, idempotency keys,
// retries and typed errors taken care of. The generated messages and stubs are under
// tender::payments::v1, tender::refunds::v1 and tender::auth::v1 (generated/, from proto/).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "tender/auth/v1/auth_service.grpc.pb.h"
#include "tender/payments/v1/payment_service.grpc.pb.h"
#include "tender/refunds/v1/refund_service.grpc.pb.h"

namespace tender {

using payments::v1::Payment;
using payments::v1::WatchPaymentsResponse;
using refunds::v1::Refund;

// A client's id and secret, and the scopes to ask for (all of the client's when empty).
struct Credentials {
  std::string client_id;
  std::string client_secret;
  std::vector<std::string> scopes;

  // Reads a JSON credentials file such as the one `tender dev` writes (client_id or clientID,
  // client_secret or clientSecret).
  static Credentials FromFile(const std::string& path);
};

// Retries of one logical operation: exponential backoff with full jitter. UNAVAILABLE, ABORTED
// IDEMPOTENCY_KEY_IN_USE and (for calls with an idempotency key) DEADLINE_EXCEEDED are retried;
// every attempt sends the operation's one idempotency key, so a retry never acts twice.
struct RetryPolicy {
  int max_attempts = 6;
  std::chrono::milliseconds initial_backoff{200};
  std::chrono::milliseconds max_backoff{5000};
};

struct ClientOptions {
  std::string target;     // host:port of Tender's gRPC listener
  std::string ca_file;    // PEM roots of the server's certificate (the system's when empty)
  std::string cert_file;  // this client's certificate chain, for mTLS (with key_file)
  std::string key_file;
  std::chrono::milliseconds timeout{10000};  // deadline of each attempt of a unary call
  RetryPolicy retry;
};

// A call Tender refused, or that did not reach it: the status, and the ErrorInfo reason and
// metadata Tender sends (metadata["field"] names the request field at fault).
class Error : public std::runtime_error {
 public:
  Error(grpc::StatusCode code, std::string message, std::string reason, std::map<std::string, std::string> metadata);
  grpc::StatusCode code() const { return code_; }
  const std::string& reason() const { return reason_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The request field at fault, or "" when Tender named none.
  std::string field() const;
  // The status code's name: FAILED_PRECONDITION, …
  std::string code_name() const;

 private:
  grpc::StatusCode code_;
  std::string reason_;
  std::map<std::string, std::string> metadata_;
};

// Reasons a caller acts on; each is an Error with that reason.
#define TENDER_ERROR(Name) \
  class Name : public Error {  \
   public:                     \
    explicit Name(const Error& error) : Error(error) {} \
  };
TENDER_ERROR(CardDeclined)            // FAILED_PRECONDITION; metadata payment_id, decline_reason
TENDER_ERROR(RefundExceedsCaptured)   // FAILED_PRECONDITION; field amount_minor
TENDER_ERROR(CaptureExceedsAuthorized)
TENDER_ERROR(PaymentNotFound)         // NOT_FOUND
TENDER_ERROR(RefundNotFound)
TENDER_ERROR(ScopeMissing)            // PERMISSION_DENIED; metadata required_scope
TENDER_ERROR(TokenExpired)            // UNAUTHENTICATED
TENDER_ERROR(TokenRevoked)
TENDER_ERROR(InvalidClient)           // IssueToken: wrong client id or secret
TENDER_ERROR(IdempotencyKeyReused)    // INVALID_ARGUMENT
TENDER_ERROR(IdempotencyKeyInUse)     // ABORTED: retry later with the same key
TENDER_ERROR(CardDataRejected)        // INVALID_ARGUMENT
TENDER_ERROR(RateLimited)             // RESOURCE_EXHAUSTED
#undef TENDER_ERROR

// The Error for a failed status, decoded from its details.
Error DecodeError(const grpc::Status& status);
// Throws the typed Error for `error`'s reason (or `error` itself).
[[noreturn]] void ThrowTyped(const Error& error);

// A new idempotency key (a random UUID).
std::string NewIdempotencyKey();

// Whether the schema declares `idempotency: IDEMPOTENCY_REQUIRED` for the method.
bool NeedsIdempotencyKey(const google::protobuf::MethodDescriptor* method);

// Access tokens from AuthService.IssueToken, fetched when first needed and again before they
// expire (at 80 % of their lifetime, and at least 30 s early), or at once after the server
// refused one. Thread-safe.
class TokenSource {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;
  TokenSource(std::shared_ptr<grpc::Channel> channel, Credentials credentials, std::chrono::milliseconds timeout,
              Clock clock = std::chrono::system_clock::now);
  std::string Token();
  void Invalidate(const std::string& token);
  std::chrono::system_clock::time_point expire_time();
  int issued();

 private:
  void Issue();
  std::unique_ptr<auth::v1::AuthService::Stub> stub_;
  Credentials credentials_;
  std::chrono::milliseconds timeout_;
  Clock clock_;
  std::mutex mutex_;
  std::string token_;
  std::chrono::system_clock::time_point refresh_at_{};
  std::chrono::system_clock::time_point expire_at_{};
  int issued_ = 0;
};

class Client;

// A WatchPayments stream that is opened again after its last event when it breaks (a restart, a
// drain, a lost connection), so no event is lost or repeated. Next blocks; Cancel, from any
// thread, makes it return false.
class Watch {
 public:
  Watch(Client& client, std::string cursor = "");
  bool Next(WatchPaymentsResponse* event);
  void Cancel();
  const std::string& cursor() const { return cursor_; }

 private:
  Client& client_;
  std::string cursor_;
  std::mutex mutex_;
  bool cancelled_ = false;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<WatchPaymentsResponse>> reader_;
  std::string token_;
  int failures_ = 0;
};

class Client {
 public:
  Client(ClientOptions options, Credentials credentials);

  // Charges (automatic capture) or authorizes (manual) an amount in minor units; an empty key
  // means a new one for this operation. A declined card throws CardDeclined.
  Payment CreatePayment(const payments::v1::CreatePaymentRequest& request, std::string idempotency_key = "");
  // Captures amount_minor of an authorized payment (all of it when 0).
  Payment CapturePayment(const std::string& payment_id, int64_t amount_minor = 0, std::string idempotency_key = "");
  Payment CancelPayment(const std::string& payment_id, const std::string& reason = "",
                        std::string idempotency_key = "");
  Payment GetPayment(const std::string& payment_id);
  // Every payment matching the filter (its page_token is ignored), following the pages, at most `limit`.
  std::vector<Payment> ListPayments(payments::v1::ListPaymentsRequest filter, size_t limit = SIZE_MAX);

  // Refunds amount_minor of a captured payment (all that is left when 0). More than is left
  // throws RefundExceedsCaptured.
  Refund CreateRefund(const std::string& payment_id, int64_t amount_minor = 0, std::string idempotency_key = "");
  Refund GetRefund(const std::string& refund_id);
  std::vector<Refund> ListRefunds(const std::string& payment_id = "", size_t limit = SIZE_MAX);

  TokenSource& tokens() { return *tokens_; }
  const ClientOptions& options() const { return options_; }

  // For tests: how long to wait between attempts is up to this function (default: sleep).
  std::function<void(std::chrono::milliseconds)> sleep;

 private:
  friend class Watch;
  template <typename Request, typename Response, typename Method>
  Response Unary(const google::protobuf::MethodDescriptor* descriptor, const Request& request,
                 std::string idempotency_key, Method method);
  std::chrono::milliseconds Backoff(int attempt) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<TokenSource> tokens_;
  std::unique_ptr<payments::v1::PaymentService::Stub> payments_;
  std::unique_ptr<refunds::v1::RefundService::Stub> refunds_;
};

}  // namespace tender
