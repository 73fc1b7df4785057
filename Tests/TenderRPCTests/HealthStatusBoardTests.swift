import TenderRPC
import Testing

@Suite("Health status board")
struct HealthStatusBoardTests {
  @Test("A watch sees the current status, then each change")
  func watchSeesChanges() async {
    let board = HealthStatusBoard(services: ["tender.payments.v1.PaymentService"])
    var iterator = board.watch("tender.payments.v1.PaymentService").makeAsyncIterator()
    #expect(await iterator.next() == .some(.notServing))
    board.setAll(.serving)
    #expect(await iterator.next() == .some(.serving))
    board.set(.notServing, for: "tender.payments.v1.PaymentService")
    #expect(await iterator.next() == .some(.notServing))
  }

  @Test("An unknown service is reported as nil and becomes known when set")
  func unknownService() async {
    let board = HealthStatusBoard(services: [])
    #expect(board.status(of: "x.Y") == nil)
    var iterator = board.watch("x.Y").makeAsyncIterator()
    #expect(await iterator.next() == .some(nil))
    board.set(.serving, for: "x.Y")
    #expect(await iterator.next() == .some(.serving))
  }

  @Test("Ended watches leave nothing behind, however many distinct names they watched")
  func endedWatchesForgotten() async {
    let board = HealthStatusBoard(services: ["a.A"])
    for index in 0..<1000 {
      // Dropped after its first status, as a cancelled RPC drops it.
      var iterator = board.watch("unknown.\(index)").makeAsyncIterator()
      #expect(await iterator.next() == .some(nil))
    }
    do {
      let kept = board.watch("a.A")
      withExtendedLifetime(kept) {
        #expect(board.watches.streams == 1 && board.watches.names == 1)
      }
    }
    // A watch whose task is cancelled before it sees anything.
    let watcher = Task { for await _ in board.watch("c.C") {} }
    watcher.cancel()
    await watcher.value
    #expect(board.watches.streams == 0 && board.watches.names == 0)
  }

  @Test("Shutdown reports NOT_SERVING, ends every watch and cannot be undone")
  func shutdownIsFinal() async {
    let board = HealthStatusBoard(services: ["a.A"])
    board.setAll(.serving)
    var iterator = board.watch("").makeAsyncIterator()
    #expect(await iterator.next() == .some(.serving))
    board.shutDown()
    #expect(await iterator.next() == .some(.notServing))
    #expect(await iterator.next() == nil)
    board.setAll(.serving)
    #expect(board.status(of: "") == .notServing)
    #expect(board.status(of: "a.A") == .notServing)
    // A watch begun after shutdown gets the status and ends at once.
    var late = board.watch("a.A").makeAsyncIterator()
    #expect(await late.next() == .some(.notServing))
    #expect(await late.next() == nil)
  }
}
