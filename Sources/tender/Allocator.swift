import CTenderAllocator

/// How the process's allocator is set before serving.
enum Allocator {
  /// Blocks of a MiB or more are mapped on their own and returned to the system when freed
  /// (see `tender_allocator_fix_mmap_threshold`): RSS then follows what Tender holds, not the
  /// largest buffers it ever freed. Smaller blocks, such as the transport's buffers, stay in
  /// the arenas.
  /// Whether the threshold was set (only glibc has one).
  @discardableResult
  static func configure() -> Bool {
    tender_allocator_fix_mmap_threshold(1 << 20) == 1
  }
}
