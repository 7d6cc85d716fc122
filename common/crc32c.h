// common/crc32c.h — CRC32C (Castagnoli), as used by ferry frames.
//
// ISA-L's crc32_iscsi when the build has it, else a table-driven fallback; both give the
// standard CRC32C (check value of "123456789" is 0xE3069283).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

// crc32c(data, n) of a whole buffer; chain pieces with crc32c_extend(prev, data, n).
uint32_t crc32c(const void* data, size_t n);
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n);
// The portable reference, for tests.
uint32_t crc32c_extend_scalar(uint32_t crc, const void* data, size_t n);

}  // namespace ferry
