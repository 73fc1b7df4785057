#ifndef C_TENDER_ALLOCATOR_H
#define C_TENDER_ALLOCATOR_H

/// Fixes glibc malloc's mmap threshold at `bytes`: larger blocks are mapped and unmapped on their
/// own, and go back to the system when freed. Left dynamic, glibc raises the threshold to the
/// size of every large mapped block freed (up to 32 MiB), after which such blocks come from the
/// thread's arena, which keeps them once freed: each 16-MiB scrypt buffer of a client-secret
/// check then stays in RSS, once per arena. Returns 0 where there is no glibc.
int tender_allocator_fix_mmap_threshold(int bytes);

#endif
