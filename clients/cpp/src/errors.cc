#include <google/protobuf/any.pb.h>

#include <random>
#include <sstream>

#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "tender/client.h"
#include "tender/options/v1/policy.pb.h"

namespace tender {

namespace {
const char* const kDomain = "tender.dev";

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

std::string Describe(grpc::StatusCode code, const std::string& reason, const std::string& message) {
  return std::string(CodeName(code)) + " " + (reason.empty() ? "-" : reason) + ": " + message;
}
}  // namespace

Error::Error(grpc::StatusCode code, std::string message, std::string reason,
             std::map<std::string, std::string> metadata)
    : std::runtime_error(Describe(code, reason, message)),
      code_(code),
      reason_(std::move(reason)),
      metadata_(std::move(metadata)) {}

std::string Error::field() const {
  auto found = metadata_.find("field");
  return found == metadata_.end() ? "" : found->second;
}

std::string Error::code_name() const { return CodeName(code_); }

Error DecodeError(const grpc::Status& status) {
  std::string reason;
  std::map<std::string, std::string> metadata;
  google::rpc::Status details;
  if (!status.error_details().empty() && details.ParseFromString(status.error_details())) {
    for (const auto& detail : details.details()) {
      google::rpc::ErrorInfo info;
      if (detail.Is<google::rpc::ErrorInfo>() && detail.UnpackTo(&info) && info.domain() == kDomain) {
        reason = info.reason();
        metadata.insert(info.metadata().begin(), info.metadata().end());
        break;
      }
    }
  }
  return Error(status.error_code(), status.error_message(), reason, metadata);
}

void ThrowTyped(const Error& error) {
  const std::string& reason = error.reason();
  if (reason == "CARD_DECLINED") throw CardDeclined(error);
  if (reason == "REFUND_EXCEEDS_CAPTURED") throw RefundExceedsCaptured(error);
  if (reason == "CAPTURE_EXCEEDS_AUTHORIZED") throw CaptureExceedsAuthorized(error);
  if (reason == "PAYMENT_NOT_FOUND") throw PaymentNotFound(error);
  if (reason == "REFUND_NOT_FOUND") throw RefundNotFound(error);
  if (reason == "SCOPE_MISSING") throw ScopeMissing(error);
  if (reason == "TOKEN_EXPIRED") throw TokenExpired(error);
  if (reason == "TOKEN_REVOKED") throw TokenRevoked(error);
  if (reason == "INVALID_CLIENT") throw InvalidClient(error);
  if (reason == "IDEMPOTENCY_KEY_REUSED") throw IdempotencyKeyReused(error);
  if (reason == "IDEMPOTENCY_KEY_IN_USE") throw IdempotencyKeyInUse(error);
  if (reason == "CARD_DATA_REJECTED") throw CardDataRejected(error);
  if (reason == "RATE_LIMITED") throw RateLimited(error);
  throw error;
}

std::string NewIdempotencyKey() {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  uint64_t high = random(), low = random();
  high = (high & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  low = (low & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;    // variant 10
  char text[37];
  snprintf(text, sizeof text, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(high >> 32),
           static_cast<unsigned>((high >> 16) & 0xffff), static_cast<unsigned>(high & 0xffff),
           static_cast<unsigned>(low >> 48), static_cast<unsigned long long>(low & 0xffffffffffffULL));
  return text;
}

bool NeedsIdempotencyKey(const google::protobuf::MethodDescriptor* method) {
  const auto& options = method->options();
  return options.HasExtension(options::v1::policy) &&
         options.GetExtension(options::v1::policy).idempotency() == options::v1::IDEMPOTENCY_REQUIRED;
}

}  // namespace tender
