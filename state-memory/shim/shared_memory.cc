// A small shim over RocksDB's C++ API for what the C API (and so rust-rocksdb) does not
// expose: an LRU block cache with a chosen high-priority pool ratio, a write-buffer
// manager charged to it, both installed on a rocksdb_options_t, and their usage figures.
// Compiled against the headers of the RocksDB that librocksdb-sys builds and links.

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "rocksdb/advanced_cache.h"
#include "rocksdb/cache.h"
#include "rocksdb/options.h"
#include "rocksdb/table.h"
#include "rocksdb/write_buffer_manager.h"

using ROCKSDB_NAMESPACE::BlockBasedTableOptions;
using ROCKSDB_NAMESPACE::Cache;
using ROCKSDB_NAMESPACE::LRUCacheOptions;
using ROCKSDB_NAMESPACE::Options;
using ROCKSDB_NAMESPACE::WriteBufferManager;

// The C API's wrapper of Options (rocksdb/db/c.cc: `struct rocksdb_options_t { Options rep; };`).
struct rocksdb_options_t {
  Options rep;
};

struct state_shared_memory {
  std::shared_ptr<Cache> cache;
  std::shared_ptr<WriteBufferManager> wbm;
};

extern "C" {

state_shared_memory* state_shared_memory_create(size_t cache_capacity, size_t wbm_capacity,
                                                double high_pri_pool_ratio) {
  LRUCacheOptions cache_opts;
  cache_opts.capacity = cache_capacity;
  cache_opts.num_shard_bits = -1;
  cache_opts.strict_capacity_limit = false;
  cache_opts.high_pri_pool_ratio = high_pri_pool_ratio;
  auto* shared = new state_shared_memory();
  shared->cache = cache_opts.MakeSharedCache();
  if (!shared->cache) {
    delete shared;
    return nullptr;
  }
  // Charged to the cache: memtable memory counts against the cache's capacity.
  shared->wbm = std::make_shared<WriteBufferManager>(wbm_capacity, shared->cache, false);
  return shared;
}

void state_shared_memory_destroy(state_shared_memory* shared) { delete shared; }

// Installs the shared cache (index and filter blocks cached with high priority, top
// level pinned) and write-buffer manager on `opts`, keeping the rest of its table options.
void state_shared_memory_apply(const state_shared_memory* shared, rocksdb_options_t* opts) {
  BlockBasedTableOptions table;
  if (opts->rep.table_factory) {
    const BlockBasedTableOptions* existing = opts->rep.table_factory->GetOptions<BlockBasedTableOptions>();
    if (existing != nullptr) {
      table = *existing;
    }
  }
  table.block_cache = shared->cache;
  table.no_block_cache = false;
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  table.pin_top_level_index_and_filter = true;
  opts->rep.table_factory.reset(ROCKSDB_NAMESPACE::NewBlockBasedTableFactory(table));
  opts->rep.write_buffer_manager = shared->wbm;
}

size_t state_shared_memory_cache_capacity(const state_shared_memory* s) { return s->cache->GetCapacity(); }
size_t state_shared_memory_cache_usage(const state_shared_memory* s) { return s->cache->GetUsage(); }
size_t state_shared_memory_cache_pinned_usage(const state_shared_memory* s) { return s->cache->GetPinnedUsage(); }
size_t state_shared_memory_wbm_capacity(const state_shared_memory* s) { return s->wbm->buffer_size(); }
size_t state_shared_memory_wbm_usage(const state_shared_memory* s) { return s->wbm->memory_usage(); }
size_t state_shared_memory_wbm_mutable_usage(const state_shared_memory* s) {
  return s->wbm->mutable_memtable_memory_usage();
}

// The cache's own description of its options (RocksDB prints `high_pri_pool_ratio`),
// copied into `buf` (NUL-terminated, truncated to `len`); returns the full length.
size_t state_shared_memory_cache_options(const state_shared_memory* s, char* buf, size_t len) {
  std::string printed = s->cache->GetPrintableOptions();
  if (len > 0) {
    size_t n = printed.size() < len - 1 ? printed.size() : len - 1;
    std::memcpy(buf, printed.data(), n);
    buf[n] = '\0';
  }
  return printed.size();
}

// The block cache and write-buffer manager installed on `opts` are the shared ones.
int state_shared_memory_is_applied(const state_shared_memory* s, const rocksdb_options_t* opts) {
  if (!opts->rep.table_factory || opts->rep.write_buffer_manager != s->wbm) {
    return 0;
  }
  const BlockBasedTableOptions* table = opts->rep.table_factory->GetOptions<BlockBasedTableOptions>();
  return table != nullptr && table->block_cache == s->cache ? 1 : 0;
}

}  // extern "C"
