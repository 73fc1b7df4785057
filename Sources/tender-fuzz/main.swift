// libFuzzer's entry points (built with `deploy/fuzz.sh`: --sanitize=fuzzer --sanitize=address).
// TENDER_FUZZ_TARGET names the target; see FuzzTarget.
import TenderFuzzing

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(
  _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>
) -> CInt {
  FuzzHost.start()
  return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
  FuzzHost.run(UnsafeRawBufferPointer(start: data, count: size))
  return 0
}
