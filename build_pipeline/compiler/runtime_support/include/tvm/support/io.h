/*
 * Lantern: minimal byte-stream interface for building TVM's web runtime.
 * The PyPI wheel ships runtime sources that include this header but not the
 * header itself.  Written for Lantern; declares only what the runtime uses.
 */
#ifndef TVM_SUPPORT_IO_H_
#define TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

/*! \brief Abstract byte stream; typed Read/Write go through Serializer<T>. */
class Stream {
 public:
  virtual ~Stream() = default;
  /*! \return number of bytes actually read. */
  virtual size_t Read(void* ptr, size_t size) = 0;
  /*! \return number of bytes written. */
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value);
  template <typename T>
  bool Read(T* value);
  template <typename T>
  void WriteArray(const T* data, size_t count);
  template <typename T>
  bool ReadArray(T* data, size_t count);
};

}  // namespace support
}  // namespace tvm

#include <tvm/support/serializer.h>

#endif  // TVM_SUPPORT_IO_H_
