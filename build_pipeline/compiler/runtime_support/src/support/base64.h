/*
 * Lantern: base64 (RFC 4648, '=' padded) stream adaptors, used by the
 * runtime's JSON form of tensors.  Written for Lantern.
 */
#ifndef TVM_SUPPORT_BASE64_H_
#define TVM_SUPPORT_BASE64_H_

#include <tvm/ffi/error.h>
#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>
#include <string>

namespace tvm {
namespace support {

namespace base64_detail {
inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}
inline int Decode(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64_detail

/*! \brief Encodes bytes to base64 text written to another stream. Call Finish() at the end. */
class Base64OutStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64OutStream(Stream* out) : out_(out) {}

  size_t Write(const void* ptr, size_t size) final {
    const unsigned char* p = static_cast<const unsigned char*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      buf_[nbuf_++] = p[i];
      if (nbuf_ == 3) Flush();
    }
    return size;
  }
  size_t Read(void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "Base64OutStream is write-only";
    return 0;
  }
  /*! \brief Emit the final partial group with '=' padding. */
  void Finish() {
    if (nbuf_ != 0) Flush();
  }

 private:
  void Flush() {
    const char* a = base64_detail::Alphabet();
    uint32_t v = (uint32_t(buf_[0]) << 16) | (nbuf_ > 1 ? uint32_t(buf_[1]) << 8 : 0) |
                 (nbuf_ > 2 ? uint32_t(buf_[2]) : 0);
    char out[4] = {a[(v >> 18) & 63], a[(v >> 12) & 63], nbuf_ > 1 ? a[(v >> 6) & 63] : '=',
                   nbuf_ > 2 ? a[v & 63] : '='};
    out_->Write(out, 4);
    nbuf_ = 0;
  }
  Stream* out_;
  unsigned char buf_[3];
  int nbuf_ = 0;
};

/*! \brief Decodes base64 text read from another stream. Call InitPosition() first. */
class Base64InStream : public Stream {
 public:
  using Stream::Read;
  using Stream::Write;

  explicit Base64InStream(Stream* in) : in_(in) {}

  /*! \brief Skip leading whitespace before the encoded data. */
  void InitPosition() {
    char c;
    while (in_->Read(&c, 1) == 1) {
      if (!std::isspace(static_cast<unsigned char>(c))) {
        pending_char_ = c;
        has_pending_char_ = true;
        return;
      }
    }
  }

  size_t Read(void* ptr, size_t size) final {
    unsigned char* p = static_cast<unsigned char*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (pos_ == nout_ && !DecodeGroup()) break;
      p[n++] = out_[pos_++];
    }
    return n;
  }
  size_t Write(const void*, size_t) final {
    TVM_FFI_THROW(InternalError) << "Base64InStream is read-only";
    return 0;
  }

 private:
  bool NextChar(char* c) {
    if (has_pending_char_) {
      has_pending_char_ = false;
      *c = pending_char_;
      return true;
    }
    return in_->Read(c, 1) == 1;
  }
  bool DecodeGroup() {
    if (finished_) return false;
    int vals[4];
    int count = 0, pad = 0;
    char c;
    while (count < 4 && NextChar(&c)) {
      if (c == '=') {
        vals[count++] = 0;
        ++pad;
        continue;
      }
      int d = base64_detail::Decode(c);
      if (d < 0) {
        finished_ = true;  // end of the encoded text
        break;
      }
      vals[count++] = d;
    }
    if (count < 4) {
      finished_ = true;
      if (count == 0) return false;
      TVM_FFI_THROW(ValueError) << "Truncated base64 data";
    }
    uint32_t v = (uint32_t(vals[0]) << 18) | (uint32_t(vals[1]) << 12) |
                 (uint32_t(vals[2]) << 6) | uint32_t(vals[3]);
    out_[0] = static_cast<unsigned char>(v >> 16);
    out_[1] = static_cast<unsigned char>(v >> 8);
    out_[2] = static_cast<unsigned char>(v);
    nout_ = 3 - pad;
    pos_ = 0;
    if (pad != 0) finished_ = true;
    return nout_ > 0;
  }
  Stream* in_;
  unsigned char out_[3];
  int nout_ = 0;
  int pos_ = 0;
  bool finished_ = false;
  bool has_pending_char_ = false;
  char pending_char_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_BASE64_H_
