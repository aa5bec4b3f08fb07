/*
 * Lantern: binary serializer used by TVM runtime modules (VM executable,
 * WebGPU shader table).  Layout, all little-endian:
 *   trivially copyable T : its raw bytes
 *   string / bytes       : uint64 length, then the bytes
 *   vector / Array       : uint64 count, then each element
 *   map / Map            : uint64 count, then (key, value) pairs
 * This is the layout the native TVM library writes when it exports modules,
 * so bytes produced at compile time load in the wasm runtime.
 */
#ifndef TVM_SUPPORT_SERIALIZER_H_
#define TVM_SUPPORT_SERIALIZER_H_

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <map>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

/*! \brief Default: raw bytes of a trivially copyable value. */
template <typename T, typename Enable = void>
struct Serializer {
  static_assert(std::is_trivially_copyable<T>::value,
                "tvm::support::Serializer has no specialization for this type");
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& value) { strm->Write(&value, sizeof(T)); }
  static bool Read(Stream* strm, T* value) { return strm->Read(value, sizeof(T)) == sizeof(T); }
};

namespace detail {
inline void WriteBytes(Stream* strm, const char* data, size_t size) {
  uint64_t n = size;
  strm->Write(&n, sizeof(n));
  if (size != 0) strm->Write(data, size);
}
inline bool ReadBytes(Stream* strm, std::string* out) {
  uint64_t n = 0;
  if (strm->Read(&n, sizeof(n)) != sizeof(n)) return false;
  out->resize(static_cast<size_t>(n));
  if (n == 0) return true;
  return strm->Read(&(*out)[0], static_cast<size_t>(n)) == n;
}
inline bool ReadCount(Stream* strm, uint64_t* n) {
  return strm->Read(n, sizeof(*n)) == sizeof(*n);
}
inline void WriteCount(Stream* strm, uint64_t n) { strm->Write(&n, sizeof(n)); }
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& v) {
    detail::WriteBytes(strm, v.data(), v.size());
  }
  static bool Read(Stream* strm, std::string* v) { return detail::ReadBytes(strm, v); }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& v) {
    detail::WriteBytes(strm, v.data(), v.size());
  }
  static bool Read(Stream* strm, ffi::String* v) {
    std::string tmp;
    if (!detail::ReadBytes(strm, &tmp)) return false;
    *v = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& v) {
    Serializer<A>::Write(strm, v.first);
    Serializer<B>::Write(strm, v.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* v) {
    return Serializer<A>::Read(strm, &v->first) && Serializer<B>::Read(strm, &v->second);
  }
};

template <typename T, typename Alloc>
struct Serializer<std::vector<T, Alloc>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T, Alloc>& v) {
    detail::WriteCount(strm, v.size());
    for (const T& item : v) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, std::vector<T, Alloc>* v) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    v->clear();
    v->resize(static_cast<size_t>(n));
    for (auto& item : *v) {
      if (!Serializer<T>::Read(strm, &item)) return false;
    }
    return true;
  }
};

/*! \brief Shared code for std::map and std::unordered_map. */
template <typename MapT>
struct StdMapSerializer {
  static constexpr bool enabled = true;
  using K = typename MapT::key_type;
  using V = typename MapT::mapped_type;
  static void Write(Stream* strm, const MapT& m) {
    detail::WriteCount(strm, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, MapT* m) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    m->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      (*m)[std::move(key)] = std::move(value);
    }
    return true;
  }
};

template <typename K, typename V, typename... Rest>
struct Serializer<std::map<K, V, Rest...>> : StdMapSerializer<std::map<K, V, Rest...>> {};

template <typename K, typename V, typename... Rest>
struct Serializer<std::unordered_map<K, V, Rest...>>
    : StdMapSerializer<std::unordered_map<K, V, Rest...>> {};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& v) {
    detail::WriteCount(strm, v.size());
    for (const T& item : v) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* v) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Array<T> out;
    out.reserve(static_cast<int64_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      out.push_back(std::move(item));
    }
    *v = std::move(out);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& m) {
    detail::WriteCount(strm, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* m) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Map<K, V> out;
    for (uint64_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(strm, &key) || !Serializer<V>::Read(strm, &value)) return false;
      out.Set(std::move(key), std::move(value));
    }
    *m = std::move(out);
    return true;
  }
};

// ---- Stream's typed helpers (declared in io.h) ----
template <typename T>
inline void Stream::Write(const T& value) {
  Serializer<T>::Write(this, value);
}
template <typename T>
inline bool Stream::Read(T* value) {
  return Serializer<T>::Read(this, value);
}
template <typename T>
inline void Stream::WriteArray(const T* data, size_t count) {
  for (size_t i = 0; i < count; ++i) Serializer<T>::Write(this, data[i]);
}
template <typename T>
inline bool Stream::ReadArray(T* data, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    if (!Serializer<T>::Read(this, data + i)) return false;
  }
  return true;
}

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_SERIALIZER_H_
