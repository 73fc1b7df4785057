// The reference point of Tender's Health benchmark: gRPC C++'s own server with its built-in
// grpc.health.v1.Health service, over TLS with the same certificate, measured under the same
// h2load load as Tender. Usage: health_server ADDRESS CERT_PEM KEY_PEM
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

namespace {

std::string ReadFile(const char* path) {
  std::ifstream file(path);
  if (!file) {
    std::cerr << "health_server: cannot read " << path << std::endl;
    std::exit(2);
  }
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: health_server ADDRESS CERT_PEM KEY_PEM" << std::endl;
    return 2;
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::SslServerCredentialsOptions tls;
  tls.pem_key_cert_pairs.push_back({ReadFile(argv[3]), ReadFile(argv[2])});
  grpc::ServerBuilder builder;
  builder.AddListeningPort(argv[1], grpc::SslServerCredentials(tls));
  // The server needs one service of its own to start polling; this one answers UNIMPLEMENTED to
  // every method but the health service's.
  grpc::CallbackGenericService unimplemented;
  builder.RegisterCallbackGenericService(&unimplemented);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "health_server: cannot listen on " << argv[1] << std::endl;
    return 1;
  }
  std::cout << "health_server: serving on " << argv[1] << std::endl;
  // SIGTERM and SIGINT end the process (the benchmark stops it that way).
  server->Wait();
  return 0;
}
