// Authorizes a payment, captures part of it, refunds part, and lists what it made.
//   tender_example TARGET CA_FILE CREDENTIALS_FILE
// e.g. after deploy/dev.sh: tender_example localhost:8443 .tender/dev/tls/ca.pem .tender/dev/dev-client.json
#include <iostream>

#include "tender/client.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " TARGET CA_FILE CREDENTIALS_FILE\n";
    return 64;
  }
  tender::ClientOptions options;
  options.target = argv[1];
  options.ca_file = argv[2];
  try {
    tender::Client client(options, tender::Credentials::FromFile(argv[3]));

    tender::payments::v1::CreatePaymentRequest request;
    request.mutable_amount()->set_amount_minor(1000);
    request.mutable_amount()->set_currency("EUR");
    request.set_payment_method_token("pm_card_visa");
    request.set_capture_method(tender::payments::v1::CAPTURE_METHOD_MANUAL);
    request.set_customer_reference("cpp-example");
    // Every retry of this call sends the same (generated) idempotency key.
    tender::Payment payment = client.CreatePayment(request);
    std::cout << "created " << payment.payment_id() << " "
              << tender::payments::v1::PaymentStatus_Name(payment.status()) << "\n";

    payment = client.CapturePayment(payment.payment_id(), 600);
    std::cout << "captured " << payment.amount_captured_minor() << " "
              << tender::payments::v1::PaymentStatus_Name(payment.status()) << "\n";

    tender::Refund refund = client.CreateRefund(payment.payment_id(), 250);
    std::cout << "refund " << refund.refund_id() << " " << tender::refunds::v1::RefundStatus_Name(refund.status())
              << "\n";

    try {
      client.CreateRefund(payment.payment_id(), 10000);
    } catch (const tender::RefundExceedsCaptured& refused) {
      std::cout << "refused: " << refused.reason() << " (field " << refused.field() << ")\n";
    }

    tender::payments::v1::ListPaymentsRequest filter;
    filter.set_customer_reference("cpp-example");
    for (const auto& listed : client.ListPayments(filter, 5)) {
      std::cout << listed.payment_id() << " " << listed.amount().amount_minor() << " "
                << listed.amount().currency() << " refunded " << listed.amount_refunded_minor() << "\n";
    }
  } catch (const tender::Error& error) {
    std::cerr << "tender: " << error.what() << "\n";
    return static_cast<int>(error.code());
  }
  return 0;
}
