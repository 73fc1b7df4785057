#include "tender/client.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

namespace tender {

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

// A string member of a flat JSON object (enough for a credentials file).
std::string JsonString(const std::string& json, const std::string& name) {
  std::smatch match;
  std::regex pattern("\"" + name + "\"\\s*:\\s*\"([^\"\\\\]*)\"");
  return std::regex_search(json, match, pattern) ? match[1].str() : "";
}

bool Retryable(const Error& error, bool keyed) {
  switch (error.code()) {
    case grpc::StatusCode::UNAVAILABLE: return true;
    case grpc::StatusCode::ABORTED: return error.reason() == "IDEMPOTENCY_KEY_IN_USE";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return keyed;
    default: return false;
  }
}

const google::protobuf::MethodDescriptor* PaymentMethod(const char* name) {
  return payments::v1::Payment::descriptor()->file()->FindServiceByName("PaymentService")->FindMethodByName(name);
}

const google::protobuf::MethodDescriptor* RefundMethod(const char* name) {
  return refunds::v1::Refund::descriptor()->file()->FindServiceByName("RefundService")->FindMethodByName(name);
}

}  // namespace

Credentials Credentials::FromFile(const std::string& path) {
  std::string json = ReadFile(path);
  Credentials credentials;
  credentials.client_id = JsonString(json, "client_id");
  if (credentials.client_id.empty()) credentials.client_id = JsonString(json, "clientID");
  credentials.client_secret = JsonString(json, "client_secret");
  if (credentials.client_secret.empty()) credentials.client_secret = JsonString(json, "clientSecret");
  if (credentials.client_id.empty() || credentials.client_secret.empty()) {
    throw std::runtime_error(path + " holds no client_id and client_secret");
  }
  return credentials;
}

// Tokens

TokenSource::TokenSource(std::shared_ptr<grpc::Channel> channel, Credentials credentials,
                         std::chrono::milliseconds timeout, Clock clock)
    : stub_(auth::v1::AuthService::NewStub(channel)),
      credentials_(std::move(credentials)),
      timeout_(timeout),
      clock_(std::move(clock)) {}

std::string TokenSource::Token() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (token_.empty() || clock_() >= refresh_at_) Issue();
  return token_;
}

void TokenSource::Invalidate(const std::string& token) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (token_ == token) token_.clear();
}

std::chrono::system_clock::time_point TokenSource::expire_time() {
  std::lock_guard<std::mutex> lock(mutex_);
  return expire_at_;
}

int TokenSource::issued() {
  std::lock_guard<std::mutex> lock(mutex_);
  return issued_;
}

void TokenSource::Issue() {
  auth::v1::IssueTokenRequest request;
  request.set_client_id(credentials_.client_id);
  request.set_client_secret(credentials_.client_secret);
  for (const auto& scope : credentials_.scopes) request.add_scopes(scope);
  auth::v1::IssueTokenResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  grpc::Status status = stub_->IssueToken(&context, request, &response);
  if (!status.ok()) ThrowTyped(DecodeError(status));
  auto expire = std::chrono::system_clock::time_point(std::chrono::seconds(response.expire_time().seconds())) +
                std::chrono::duration_cast<std::chrono::system_clock::duration>(
                    std::chrono::nanoseconds(response.expire_time().nanos()));
  auto lifetime = std::max(std::chrono::system_clock::duration::zero(), expire - clock_());
  auto early = std::max(std::chrono::duration_cast<std::chrono::system_clock::duration>(lifetime / 5),
                        std::min<std::chrono::system_clock::duration>(std::chrono::seconds(30), lifetime / 2));
  token_ = response.access_token();
  expire_at_ = expire;
  refresh_at_ = expire - early;
  ++issued_;
}

// Client

Client::Client(ClientOptions options, Credentials credentials) : options_(std::move(options)) {
  grpc::SslCredentialsOptions tls;
  if (!options_.ca_file.empty()) tls.pem_root_certs = ReadFile(options_.ca_file);
  if (options_.cert_file.empty() != options_.key_file.empty()) {
    throw std::invalid_argument("cert_file and key_file go together");
  }
  if (!options_.cert_file.empty()) {
    tls.pem_cert_chain = ReadFile(options_.cert_file);
    tls.pem_private_key = ReadFile(options_.key_file);
  }
  grpc::ChannelArguments arguments;
  // After a restart or a failover the channel reconnects within 5 s, not gRPC's default 120 s.
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  channel_ = grpc::CreateCustomChannel(options_.target, grpc::SslCredentials(tls), arguments);
  tokens_ = std::make_unique<TokenSource>(channel_, std::move(credentials), options_.timeout);
  payments_ = payments::v1::PaymentService::NewStub(channel_);
  refunds_ = refunds::v1::RefundService::NewStub(channel_);
  sleep = [](std::chrono::milliseconds wait) { std::this_thread::sleep_for(wait); };
}

std::chrono::milliseconds Client::Backoff(int attempt) const {
  static thread_local std::mt19937_64 random{std::random_device{}()};
  double ceiling = std::min<double>(options_.retry.max_backoff.count(),
                                    options_.retry.initial_backoff.count() * double(1ULL << std::min(attempt - 1, 20)));
  return std::chrono::milliseconds(
      static_cast<int64_t>(std::uniform_real_distribution<double>(0, ceiling)(random)));
}

template <typename Request, typename Response, typename Method>
Response Client::Unary(const google::protobuf::MethodDescriptor* descriptor, const Request& request,
                       std::string idempotency_key, Method method) {
  bool keyed = NeedsIdempotencyKey(descriptor);
  if (!keyed) idempotency_key.clear();
  if (keyed && idempotency_key.empty()) idempotency_key = NewIdempotencyKey();
  bool refreshed = false;
  for (int attempt = 1;; ++attempt) {
    std::string token = tokens_->Token();
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + options_.timeout);
    // While the channel reconnects, an attempt waits for it (within its deadline) instead of
    // failing at once.
    context.set_wait_for_ready(true);
    context.AddMetadata("authorization", "Bearer " + token);
    if (keyed) context.AddMetadata("idempotency-key", idempotency_key);
    Response response;
    grpc::Status status = method(&context, request, &response);
    if (status.ok()) return response;
    Error error = DecodeError(status);
    if ((error.reason() == "TOKEN_EXPIRED" || error.reason() == "TOKEN_REVOKED") && !refreshed) {
      // Lapsed or revoked between fetching and use: refused before anything was done.
      tokens_->Invalidate(token);
      refreshed = true;
      --attempt;
      continue;
    }
    if (attempt >= options_.retry.max_attempts || !Retryable(error, keyed)) ThrowTyped(error);
    sleep(Backoff(attempt));
  }
}

Payment Client::CreatePayment(const payments::v1::CreatePaymentRequest& request, std::string idempotency_key) {
  using namespace payments::v1;
  return Unary<CreatePaymentRequest, CreatePaymentResponse>(
             PaymentMethod("CreatePayment"), request, std::move(idempotency_key),
             [this](grpc::ClientContext* c, const CreatePaymentRequest& q, CreatePaymentResponse* r) {
               return payments_->CreatePayment(c, q, r);
             })
      .payment();
}

Payment Client::CapturePayment(const std::string& payment_id, int64_t amount_minor, std::string idempotency_key) {
  using namespace payments::v1;
  CapturePaymentRequest request;
  request.set_payment_id(payment_id);
  request.set_amount_minor(amount_minor);
  return Unary<CapturePaymentRequest, CapturePaymentResponse>(
             PaymentMethod("CapturePayment"), request, std::move(idempotency_key),
             [this](grpc::ClientContext* c, const CapturePaymentRequest& q, CapturePaymentResponse* r) {
               return payments_->CapturePayment(c, q, r);
             })
      .payment();
}

Payment Client::CancelPayment(const std::string& payment_id, const std::string& reason, std::string idempotency_key) {
  using namespace payments::v1;
  CancelPaymentRequest request;
  request.set_payment_id(payment_id);
  request.set_reason(reason);
  return Unary<CancelPaymentRequest, CancelPaymentResponse>(
             PaymentMethod("CancelPayment"), request, std::move(idempotency_key),
             [this](grpc::ClientContext* c, const CancelPaymentRequest& q, CancelPaymentResponse* r) {
               return payments_->CancelPayment(c, q, r);
             })
      .payment();
}

Payment Client::GetPayment(const std::string& payment_id) {
  using namespace payments::v1;
  GetPaymentRequest request;
  request.set_payment_id(payment_id);
  return Unary<GetPaymentRequest, GetPaymentResponse>(
             PaymentMethod("GetPayment"), request, "",
             [this](grpc::ClientContext* c, const GetPaymentRequest& q, GetPaymentResponse* r) {
               return payments_->GetPayment(c, q, r);
             })
      .payment();
}

std::vector<Payment> Client::ListPayments(payments::v1::ListPaymentsRequest filter, size_t limit) {
  using namespace payments::v1;
  std::vector<Payment> found;
  filter.clear_page_token();
  do {
    auto page = Unary<ListPaymentsRequest, ListPaymentsResponse>(
        PaymentMethod("ListPayments"), filter, "",
        [this](grpc::ClientContext* c, const ListPaymentsRequest& q, ListPaymentsResponse* r) {
          return payments_->ListPayments(c, q, r);
        });
    for (const auto& payment : page.payments()) {
      if (found.size() < limit) found.push_back(payment);
    }
    filter.set_page_token(page.next_page_token());
  } while (!filter.page_token().empty() && found.size() < limit);
  return found;
}

Refund Client::CreateRefund(const std::string& payment_id, int64_t amount_minor, std::string idempotency_key) {
  using namespace refunds::v1;
  CreateRefundRequest request;
  request.set_payment_id(payment_id);
  request.set_amount_minor(amount_minor);
  return Unary<CreateRefundRequest, CreateRefundResponse>(
             RefundMethod("CreateRefund"), request, std::move(idempotency_key),
             [this](grpc::ClientContext* c, const CreateRefundRequest& q, CreateRefundResponse* r) {
               return refunds_->CreateRefund(c, q, r);
             })
      .refund();
}

Refund Client::GetRefund(const std::string& refund_id) {
  using namespace refunds::v1;
  GetRefundRequest request;
  request.set_refund_id(refund_id);
  return Unary<GetRefundRequest, GetRefundResponse>(
             RefundMethod("GetRefund"), request, "",
             [this](grpc::ClientContext* c, const GetRefundRequest& q, GetRefundResponse* r) {
               return refunds_->GetRefund(c, q, r);
             })
      .refund();
}

std::vector<Refund> Client::ListRefunds(const std::string& payment_id, size_t limit) {
  using namespace refunds::v1;
  ListRefundsRequest request;
  request.set_payment_id(payment_id);
  std::vector<Refund> found;
  do {
    auto page = Unary<ListRefundsRequest, ListRefundsResponse>(
        RefundMethod("ListRefunds"), request, "",
        [this](grpc::ClientContext* c, const ListRefundsRequest& q, ListRefundsResponse* r) {
          return refunds_->ListRefunds(c, q, r);
        });
    for (const auto& refund : page.refunds()) {
      if (found.size() < limit) found.push_back(refund);
    }
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty() && found.size() < limit);
  return found;
}

// Watch

Watch::Watch(Client& client, std::string cursor) : client_(client), cursor_(std::move(cursor)) {}

void Watch::Cancel() {
  std::lock_guard<std::mutex> lock(mutex_);
  cancelled_ = true;
  if (context_) context_->TryCancel();
}

bool Watch::Next(WatchPaymentsResponse* event) {
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cancelled_) return false;
      if (!reader_) {
        token_ = client_.tokens().Token();
        context_ = std::make_unique<grpc::ClientContext>();
        context_->AddMetadata("authorization", "Bearer " + token_);
        context_->set_wait_for_ready(true);
        payments::v1::WatchPaymentsRequest request;
        request.set_cursor(cursor_);
        reader_ = client_.payments_->WatchPayments(context_.get(), request);
      }
    }
    if (reader_->Read(event)) {
      failures_ = 0;
      cursor_ = event->cursor();
      return true;
    }
    grpc::Status status = reader_->Finish();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reader_.reset();
      context_.reset();
      if (cancelled_) return false;
    }
    // A watch has no end: one that ends anyway (a drain) is watched again from its cursor.
    Error error = status.ok() ? Error(grpc::StatusCode::UNAVAILABLE, "the watch ended", "", {}) : DecodeError(status);
    if (error.reason() == "TOKEN_EXPIRED" || error.reason() == "TOKEN_REVOKED") {
      client_.tokens().Invalidate(token_);
    } else if (error.code() != grpc::StatusCode::UNAVAILABLE && error.code() != grpc::StatusCode::INTERNAL &&
               error.code() != grpc::StatusCode::UNKNOWN && error.code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ThrowTyped(error);
    }
    if (++failures_ > client_.options().retry.max_attempts * 4) ThrowTyped(error);
    client_.sleep(client_.Backoff(std::min(failures_, 8)));
  }
}

}  // namespace tender
