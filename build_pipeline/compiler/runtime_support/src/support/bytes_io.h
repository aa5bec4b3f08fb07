/*
 * Lantern: in-memory streams over a byte string, used to load serialized
 * modules embedded in the wasm.  Written for Lantern.
 */
#ifndef TVM_SUPPORT_BYTES_IO_H_
#define TVM_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

/*! \brief Reads from a byte buffer; keeps the buffer alive while reading. */
class BytesInStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesInStream(const ffi::Bytes& bytes) : holder_(bytes) {}
  explicit BytesInStream(const std::string& bytes) : holder_(bytes) {}

  size_t Read(void* ptr, size_t size) final {
    size_t n = std::min(size, holder_.size() - pos_);
    if (n != 0) std::memcpy(ptr, holder_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "BytesInStream is read-only";
    return 0;
  }

 private:
  ffi::Bytes holder_;
  size_t pos_ = 0;
};

/*! \brief Appends everything written to a std::string. */
class BytesOutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit BytesOutStream(std::string* out) : out_(out) {}

  size_t Write(const void* ptr, size_t size) final {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }
  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "BytesOutStream is write-only";
    return 0;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BYTES_IO_H_
