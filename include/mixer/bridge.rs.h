#pragma once
#include "mixer/host.h"
#include <algorithm>
#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#if __cplusplus >= 202002L
#include <ranges>
#endif

#ifdef __clang__
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdollar-in-identifier-extension"
#endif // __clang__

namespace rust {
inline namespace cxxbridge1 {
// #include "rust/cxx.h"

#ifndef CXXBRIDGE1_PANIC
#define CXXBRIDGE1_PANIC
template <typename Exception>
void panic [[noreturn]] (const char *msg);
#endif // CXXBRIDGE1_PANIC

struct unsafe_bitcopy_t;

namespace {
template <typename T>
class impl;
} // namespace

template <typename T>
::std::size_t size_of();
template <typename T>
::std::size_t align_of();

#ifndef CXXBRIDGE1_RUST_STRING
#define CXXBRIDGE1_RUST_STRING
class String final {
public:
  String() noexcept;
  String(const String &) noexcept;
  String(String &&) noexcept;
  ~String() noexcept;

  String(const std::string &);
  String(const char *);
  String(const char *, std::size_t);
  String(const char16_t *);
  String(const char16_t *, std::size_t);
#ifdef __cpp_char8_t
  String(const char8_t *s);
  String(const char8_t *s, std::size_t len);
#endif

  static String lossy(const std::string &) noexcept;
  static String lossy(const char *) noexcept;
  static String lossy(const char *, std::size_t) noexcept;
  static String lossy(const char16_t *) noexcept;
  static String lossy(const char16_t *, std::size_t) noexcept;

  String &operator=(const String &) & noexcept;
  String &operator=(String &&) & noexcept;

  explicit operator std::string() const;

  const char *data() const noexcept;
  char *data() noexcept;

  std::size_t size() const noexcept;
  std::size_t length() const noexcept;
  bool empty() const noexcept;

  const char *c_str() noexcept;

  std::size_t capacity() const noexcept;
  void reserve(size_t new_cap) noexcept;

  using iterator = char *;
  iterator begin() noexcept;
  iterator end() noexcept;

  using const_iterator = const char *;
  const_iterator begin() const noexcept;
  const_iterator end() const noexcept;
  const_iterator cbegin() const noexcept;
  const_iterator cend() const noexcept;

  bool operator==(const String &) const noexcept;
  bool operator!=(const String &) const noexcept;
  bool operator<(const String &) const noexcept;
  bool operator<=(const String &) const noexcept;
  bool operator>(const String &) const noexcept;
  bool operator>=(const String &) const noexcept;

  void swap(String &) noexcept;

  String(unsafe_bitcopy_t, const String &) noexcept;

private:
  struct lossy_t;
  String(lossy_t, const char *, std::size_t) noexcept;
  String(lossy_t, const char16_t *, std::size_t) noexcept;
  friend void swap(String &lhs, String &rhs) noexcept { lhs.swap(rhs); }

  std::array<std::uintptr_t, 3> repr;
};
#endif // CXXBRIDGE1_RUST_STRING

#ifndef CXXBRIDGE1_RUST_SLICE
#define CXXBRIDGE1_RUST_SLICE
namespace detail {
template <bool>
struct copy_assignable_if {};

template <>
struct copy_assignable_if<false> {
  copy_assignable_if() noexcept = default;
  copy_assignable_if(const copy_assignable_if &) noexcept = default;
  copy_assignable_if &operator=(const copy_assignable_if &) & noexcept = delete;
  copy_assignable_if &operator=(copy_assignable_if &&) & noexcept = default;
};
} // namespace detail

template <typename T>
class Slice final
    : private detail::copy_assignable_if<std::is_const<T>::value> {
public:
  using value_type = T;

  Slice() noexcept;
  Slice(T *, std::size_t count) noexcept;

  template <typename C>
  explicit Slice(C &c) : Slice(c.data(), c.size()) {}

  Slice &operator=(const Slice<T> &) & noexcept = default;
  Slice &operator=(Slice<T> &&) & noexcept = default;

  T *data() const noexcept;
  std::size_t size() const noexcept;
  std::size_t length() const noexcept;
  bool empty() const noexcept;

  T &operator[](std::size_t n) const noexcept;
  T &at(std::size_t n) const;
  T &front() const noexcept;
  T &back() const noexcept;

  Slice(const Slice<T> &) noexcept = default;
  ~Slice() noexcept = default;

  class iterator;
  iterator begin() const noexcept;
  iterator end() const noexcept;

  void swap(Slice &) noexcept;

private:
  class uninit;
  Slice(uninit) noexcept;
  friend impl<Slice>;
  friend void sliceInit(void *, const void *, std::size_t) noexcept;
  friend void *slicePtr(const void *) noexcept;
  friend std::size_t sliceLen(const void *) noexcept;

  std::array<std::uintptr_t, 2> repr;
};

#ifdef __cpp_deduction_guides
template <typename C>
explicit Slice(C &c)
    -> Slice<std::remove_reference_t<decltype(*std::declval<C>().data())>>;
#endif // __cpp_deduction_guides

template <typename T>
class Slice<T>::iterator final {
public:
#if __cplusplus >= 202002L
  using iterator_category = std::contiguous_iterator_tag;
#else
  using iterator_category = std::random_access_iterator_tag;
#endif
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using pointer = typename std::add_pointer<T>::type;
  using reference = typename std::add_lvalue_reference<T>::type;

  reference operator*() const noexcept;
  pointer operator->() const noexcept;
  reference operator[](difference_type) const noexcept;

  iterator &operator++() noexcept;
  iterator operator++(int) noexcept;
  iterator &operator--() noexcept;
  iterator operator--(int) noexcept;

  iterator &operator+=(difference_type) noexcept;
  iterator &operator-=(difference_type) noexcept;
  iterator operator+(difference_type) const noexcept;
  friend inline iterator operator+(difference_type lhs, iterator rhs) noexcept {
    return rhs + lhs;
  }
  iterator operator-(difference_type) const noexcept;
  difference_type operator-(const iterator &) const noexcept;

  bool operator==(const iterator &) const noexcept;
  bool operator!=(const iterator &) const noexcept;
  bool operator<(const iterator &) const noexcept;
  bool operator<=(const iterator &) const noexcept;
  bool operator>(const iterator &) const noexcept;
  bool operator>=(const iterator &) const noexcept;

private:
  friend class Slice;
  void *pos;
  std::size_t stride;
};

template <typename T>
Slice<T>::Slice() noexcept {
  sliceInit(this, reinterpret_cast<void *>(align_of<T>()), 0);
}

template <typename T>
Slice<T>::Slice(T *s, std::size_t count) noexcept {
  assert(s != nullptr || count == 0);
  sliceInit(this,
            s == nullptr && count == 0
                ? reinterpret_cast<void *>(align_of<T>())
                : const_cast<typename std::remove_const<T>::type *>(s),
            count);
}

template <typename T>
T *Slice<T>::data() const noexcept {
  return reinterpret_cast<T *>(slicePtr(this));
}

template <typename T>
std::size_t Slice<T>::size() const noexcept {
  return sliceLen(this);
}

template <typename T>
std::size_t Slice<T>::length() const noexcept {
  return this->size();
}

template <typename T>
bool Slice<T>::empty() const noexcept {
  return this->size() == 0;
}

template <typename T>
T &Slice<T>::operator[](std::size_t n) const noexcept {
  assert(n < this->size());
  auto ptr = static_cast<char *>(slicePtr(this)) + size_of<T>() * n;
  return *reinterpret_cast<T *>(ptr);
}

template <typename T>
T &Slice<T>::at(std::size_t n) const {
  if (n >= this->size()) {
    panic<std::out_of_range>("rust::Slice index out of range");
  }
  return (*this)[n];
}

template <typename T>
T &Slice<T>::front() const noexcept {
  assert(!this->empty());
  return (*this)[0];
}

template <typename T>
T &Slice<T>::back() const noexcept {
  assert(!this->empty());
  return (*this)[this->size() - 1];
}

template <typename T>
typename Slice<T>::iterator::reference
Slice<T>::iterator::operator*() const noexcept {
  return *static_cast<T *>(this->pos);
}

template <typename T>
typename Slice<T>::iterator::pointer
Slice<T>::iterator::operator->() const noexcept {
  return static_cast<T *>(this->pos);
}

template <typename T>
typename Slice<T>::iterator::reference Slice<T>::iterator::operator[](
    typename Slice<T>::iterator::difference_type n) const noexcept {
  auto ptr = static_cast<char *>(this->pos) + this->stride * n;
  return *reinterpret_cast<T *>(ptr);
}

template <typename T>
typename Slice<T>::iterator &Slice<T>::iterator::operator++() noexcept {
  this->pos = static_cast<char *>(this->pos) + this->stride;
  return *this;
}

template <typename T>
typename Slice<T>::iterator Slice<T>::iterator::operator++(int) noexcept {
  auto ret = iterator(*this);
  this->pos = static_cast<char *>(this->pos) + this->stride;
  return ret;
}

template <typename T>
typename Slice<T>::iterator &Slice<T>::iterator::operator--() noexcept {
  this->pos = static_cast<char *>(this->pos) - this->stride;
  return *this;
}

template <typename T>
typename Slice<T>::iterator Slice<T>::iterator::operator--(int) noexcept {
  auto ret = iterator(*this);
  this->pos = static_cast<char *>(this->pos) - this->stride;
  return ret;
}

template <typename T>
typename Slice<T>::iterator &Slice<T>::iterator::operator+=(
    typename Slice<T>::iterator::difference_type n) noexcept {
  this->pos = static_cast<char *>(this->pos) + this->stride * n;
  return *this;
}

template <typename T>
typename Slice<T>::iterator &Slice<T>::iterator::operator-=(
    typename Slice<T>::iterator::difference_type n) noexcept {
  this->pos = static_cast<char *>(this->pos) - this->stride * n;
  return *this;
}

template <typename T>
typename Slice<T>::iterator Slice<T>::iterator::operator+(
    typename Slice<T>::iterator::difference_type n) const noexcept {
  auto ret = iterator(*this);
  ret.pos = static_cast<char *>(this->pos) + this->stride * n;
  return ret;
}

template <typename T>
typename Slice<T>::iterator Slice<T>::iterator::operator-(
    typename Slice<T>::iterator::difference_type n) const noexcept {
  auto ret = iterator(*this);
  ret.pos = static_cast<char *>(this->pos) - this->stride * n;
  return ret;
}

template <typename T>
typename Slice<T>::iterator::difference_type
Slice<T>::iterator::operator-(const iterator &other) const noexcept {
  auto diff = std::distance(static_cast<char *>(other.pos),
                            static_cast<char *>(this->pos));
  return diff / static_cast<typename Slice<T>::iterator::difference_type>(
                    this->stride);
}

template <typename T>
bool Slice<T>::iterator::operator==(const iterator &other) const noexcept {
  return this->pos == other.pos;
}

template <typename T>
bool Slice<T>::iterator::operator!=(const iterator &other) const noexcept {
  return this->pos != other.pos;
}

template <typename T>
bool Slice<T>::iterator::operator<(const iterator &other) const noexcept {
  return this->pos < other.pos;
}

template <typename T>
bool Slice<T>::iterator::operator<=(const iterator &other) const noexcept {
  return this->pos <= other.pos;
}

template <typename T>
bool Slice<T>::iterator::operator>(const iterator &other) const noexcept {
  return this->pos > other.pos;
}

template <typename T>
bool Slice<T>::iterator::operator>=(const iterator &other) const noexcept {
  return this->pos >= other.pos;
}

template <typename T>
typename Slice<T>::iterator Slice<T>::begin() const noexcept {
  iterator it;
  it.pos = slicePtr(this);
  it.stride = size_of<T>();
  return it;
}

template <typename T>
typename Slice<T>::iterator Slice<T>::end() const noexcept {
  iterator it = this->begin();
  it.pos = static_cast<char *>(it.pos) + it.stride * this->size();
  return it;
}

template <typename T>
void Slice<T>::swap(Slice &rhs) noexcept {
  std::swap(*this, rhs);
}
#endif // CXXBRIDGE1_RUST_SLICE

#ifndef CXXBRIDGE1_RUST_BOX
#define CXXBRIDGE1_RUST_BOX
template <typename T>
class Box final {
public:
  using element_type = T;
  using const_pointer =
      typename std::add_pointer<typename std::add_const<T>::type>::type;
  using pointer = typename std::add_pointer<T>::type;

  Box() = delete;
  Box(Box &&) noexcept;
  ~Box() noexcept;

  explicit Box(const T &);
  explicit Box(T &&);

  Box &operator=(Box &&) & noexcept;

  const T *operator->() const noexcept;
  const T &operator*() const noexcept;
  T *operator->() noexcept;
  T &operator*() noexcept;

  template <typename... Fields>
  static Box in_place(Fields &&...);

  void swap(Box &) noexcept;

  static Box from_raw(T *) noexcept;

  T *into_raw() noexcept;

  /* Deprecated */ using value_type = element_type;

private:
  class uninit;
  class allocation;
  Box(uninit) noexcept;
  void drop() noexcept;

  friend void swap(Box &lhs, Box &rhs) noexcept { lhs.swap(rhs); }

  T *ptr;
};

template <typename T>
class Box<T>::uninit {};

template <typename T>
class Box<T>::allocation {
  static T *alloc() noexcept;
  static void dealloc(T *) noexcept;

public:
  allocation() noexcept : ptr(alloc()) {}
  ~allocation() noexcept {
    if (this->ptr) {
      dealloc(this->ptr);
    }
  }
  T *ptr;
};

template <typename T>
Box<T>::Box(Box &&other) noexcept : ptr(other.ptr) {
  other.ptr = nullptr;
}

template <typename T>
Box<T>::Box(const T &val) {
  allocation alloc;
  ::new (alloc.ptr) T(val);
  this->ptr = alloc.ptr;
  alloc.ptr = nullptr;
}

template <typename T>
Box<T>::Box(T &&val) {
  allocation alloc;
  ::new (alloc.ptr) T(std::move(val));
  this->ptr = alloc.ptr;
  alloc.ptr = nullptr;
}

template <typename T>
Box<T>::~Box() noexcept {
  if (this->ptr) {
    this->drop();
  }
}

template <typename T>
Box<T> &Box<T>::operator=(Box &&other) & noexcept {
  if (this->ptr) {
    this->drop();
  }
  this->ptr = other.ptr;
  other.ptr = nullptr;
  return *this;
}

template <typename T>
const T *Box<T>::operator->() const noexcept {
  return this->ptr;
}

template <typename T>
const T &Box<T>::operator*() const noexcept {
  return *this->ptr;
}

template <typename T>
T *Box<T>::operator->() noexcept {
  return this->ptr;
}

template <typename T>
T &Box<T>::operator*() noexcept {
  return *this->ptr;
}

template <typename T>
template <typename... Fields>
Box<T> Box<T>::in_place(Fields &&...fields) {
  allocation alloc;
  auto ptr = alloc.ptr;
  ::new (ptr) T{std::forward<Fields>(fields)...};
  alloc.ptr = nullptr;
  return from_raw(ptr);
}

template <typename T>
void Box<T>::swap(Box &rhs) noexcept {
  using std::swap;
  swap(this->ptr, rhs.ptr);
}

template <typename T>
Box<T> Box<T>::from_raw(T *raw) noexcept {
  Box box = uninit{};
  box.ptr = raw;
  return box;
}

template <typename T>
T *Box<T>::into_raw() noexcept {
  T *raw = this->ptr;
  this->ptr = nullptr;
  return raw;
}

template <typename T>
Box<T>::Box(uninit) noexcept {}
#endif // CXXBRIDGE1_RUST_BOX

#ifndef CXXBRIDGE1_RUST_BITCOPY_T
#define CXXBRIDGE1_RUST_BITCOPY_T
struct unsafe_bitcopy_t final {
  explicit unsafe_bitcopy_t() = default;
};
#endif // CXXBRIDGE1_RUST_BITCOPY_T

#ifndef CXXBRIDGE1_RUST_VEC
#define CXXBRIDGE1_RUST_VEC
template <typename T>
class Vec final {
public:
  using value_type = T;

  Vec() noexcept;
  Vec(std::initializer_list<T>);
  Vec(const Vec &);
  Vec(Vec &&) noexcept;
  ~Vec() noexcept;

  Vec &operator=(Vec &&) & noexcept;
  Vec &operator=(const Vec &) &;

  std::size_t size() const noexcept;
  bool empty() const noexcept;
  const T *data() const noexcept;
  T *data() noexcept;
  std::size_t capacity() const noexcept;

  const T &operator[](std::size_t n) const noexcept;
  const T &at(std::size_t n) const;
  const T &front() const noexcept;
  const T &back() const noexcept;

  T &operator[](std::size_t n) noexcept;
  T &at(std::size_t n);
  T &front() noexcept;
  T &back() noexcept;

  void reserve(std::size_t new_cap);
  void push_back(const T &value);
  void push_back(T &&value);
  template <typename... Args>
  void emplace_back(Args &&...args);
  void truncate(std::size_t len);
  void clear();

  using iterator = typename Slice<T>::iterator;
  iterator begin() noexcept;
  iterator end() noexcept;

  using const_iterator = typename Slice<const T>::iterator;
  const_iterator begin() const noexcept;
  const_iterator end() const noexcept;
  const_iterator cbegin() const noexcept;
  const_iterator cend() const noexcept;

  void swap(Vec &) noexcept;

  Vec(unsafe_bitcopy_t, const Vec &) noexcept;

private:
  void reserve_total(std::size_t new_cap) noexcept;
  void set_len(std::size_t len) noexcept;
  void drop() noexcept;

  friend void swap(Vec &lhs, Vec &rhs) noexcept { lhs.swap(rhs); }

  std::array<std::uintptr_t, 3> repr;
};

template <typename T>
Vec<T>::Vec(std::initializer_list<T> init) : Vec{} {
  this->reserve_total(init.size());
  std::move(init.begin(), init.end(), std::back_inserter(*this));
}

template <typename T>
Vec<T>::Vec(const Vec &other) : Vec() {
  this->reserve_total(other.size());
  std::copy(other.begin(), other.end(), std::back_inserter(*this));
}

template <typename T>
Vec<T>::Vec(Vec &&other) noexcept : repr(other.repr) {
  new (&other) Vec();
}

template <typename T>
Vec<T>::~Vec() noexcept {
  this->drop();
}

template <typename T>
Vec<T> &Vec<T>::operator=(Vec &&other) & noexcept {
  this->drop();
  this->repr = other.repr;
  new (&other) Vec();
  return *this;
}

template <typename T>
Vec<T> &Vec<T>::operator=(const Vec &other) & {
  if (this != &other) {
    this->drop();
    new (this) Vec(other);
  }
  return *this;
}

template <typename T>
bool Vec<T>::empty() const noexcept {
  return this->size() == 0;
}

template <typename T>
const T &Vec<T>::operator[](std::size_t n) const noexcept {
  assert(n < this->size());
  auto data = reinterpret_cast<const char *>(this->data());
  return *reinterpret_cast<const T *>(data + n * size_of<T>());
}

template <typename T>
const T &Vec<T>::at(std::size_t n) const {
  if (n >= this->size()) {
    panic<std::out_of_range>("rust::Vec index out of range");
  }
  return (*this)[n];
}

template <typename T>
const T &Vec<T>::front() const noexcept {
  assert(!this->empty());
  return (*this)[0];
}

template <typename T>
const T &Vec<T>::back() const noexcept {
  assert(!this->empty());
  return (*this)[this->size() - 1];
}

template <typename T>
T &Vec<T>::operator[](std::size_t n) noexcept {
  assert(n < this->size());
  auto data = reinterpret_cast<char *>(this->data());
  return *reinterpret_cast<T *>(data + n * size_of<T>());
}

template <typename T>
T &Vec<T>::at(std::size_t n) {
  if (n >= this->size()) {
    panic<std::out_of_range>("rust::Vec index out of range");
  }
  return (*this)[n];
}

template <typename T>
T &Vec<T>::front() noexcept {
  assert(!this->empty());
  return (*this)[0];
}

template <typename T>
T &Vec<T>::back() noexcept {
  assert(!this->empty());
  return (*this)[this->size() - 1];
}

template <typename T>
void Vec<T>::reserve(std::size_t new_cap) {
  this->reserve_total(new_cap);
}

template <typename T>
void Vec<T>::push_back(const T &value) {
  this->emplace_back(value);
}

template <typename T>
void Vec<T>::push_back(T &&value) {
  this->emplace_back(std::move(value));
}

template <typename T>
template <typename... Args>
void Vec<T>::emplace_back(Args &&...args) {
  auto size = this->size();
  this->reserve_total(size + 1);
  ::new (reinterpret_cast<T *>(reinterpret_cast<char *>(this->data()) +
                               size * size_of<T>()))
      T(std::forward<Args>(args)...);
  this->set_len(size + 1);
}

template <typename T>
void Vec<T>::clear() {
  this->truncate(0);
}

template <typename T>
typename Vec<T>::iterator Vec<T>::begin() noexcept {
  return Slice<T>(this->data(), this->size()).begin();
}

template <typename T>
typename Vec<T>::iterator Vec<T>::end() noexcept {
  return Slice<T>(this->data(), this->size()).end();
}

template <typename T>
typename Vec<T>::const_iterator Vec<T>::begin() const noexcept {
  return this->cbegin();
}

template <typename T>
typename Vec<T>::const_iterator Vec<T>::end() const noexcept {
  return this->cend();
}

template <typename T>
typename Vec<T>::const_iterator Vec<T>::cbegin() const noexcept {
  return Slice<const T>(this->data(), this->size()).begin();
}

template <typename T>
typename Vec<T>::const_iterator Vec<T>::cend() const noexcept {
  return Slice<const T>(this->data(), this->size()).end();
}

template <typename T>
void Vec<T>::swap(Vec &rhs) noexcept {
  using std::swap;
  swap(this->repr, rhs.repr);
}

template <typename T>
Vec<T>::Vec(unsafe_bitcopy_t, const Vec &bits) noexcept : repr(bits.repr) {}
#endif // CXXBRIDGE1_RUST_VEC

#ifndef CXXBRIDGE1_RUST_OPAQUE
#define CXXBRIDGE1_RUST_OPAQUE
class Opaque {
public:
  Opaque() = delete;
  Opaque(const Opaque &) = delete;
  ~Opaque() = delete;
};
#endif // CXXBRIDGE1_RUST_OPAQUE

#ifndef CXXBRIDGE1_IS_COMPLETE
#define CXXBRIDGE1_IS_COMPLETE
namespace detail {
namespace {
template <typename T, typename = std::size_t>
struct is_complete : std::false_type {};
template <typename T>
struct is_complete<T, decltype(sizeof(T))> : std::true_type {};
} // namespace
} // namespace detail
#endif // CXXBRIDGE1_IS_COMPLETE

#ifndef CXXBRIDGE1_LAYOUT
#define CXXBRIDGE1_LAYOUT
class layout {
  template <typename T>
  friend std::size_t size_of();
  template <typename T>
  friend std::size_t align_of();
  template <typename T>
  static typename std::enable_if<std::is_base_of<Opaque, T>::value,
                                 std::size_t>::type
  do_size_of() {
    return T::layout::size();
  }
  template <typename T>
  static typename std::enable_if<!std::is_base_of<Opaque, T>::value,
                                 std::size_t>::type
  do_size_of() {
    return sizeof(T);
  }
  template <typename T>
  static
      typename std::enable_if<detail::is_complete<T>::value, std::size_t>::type
      size_of() {
    return do_size_of<T>();
  }
  template <typename T>
  static typename std::enable_if<std::is_base_of<Opaque, T>::value,
                                 std::size_t>::type
  do_align_of() {
    return T::layout::align();
  }
  template <typename T>
  static typename std::enable_if<!std::is_base_of<Opaque, T>::value,
                                 std::size_t>::type
  do_align_of() {
    return alignof(T);
  }
  template <typename T>
  static
      typename std::enable_if<detail::is_complete<T>::value, std::size_t>::type
      align_of() {
    return do_align_of<T>();
  }
};

template <typename T>
std::size_t size_of() {
  return layout::size_of<T>();
}

template <typename T>
std::size_t align_of() {
  return layout::align_of<T>();
}
#endif // CXXBRIDGE1_LAYOUT
} // namespace cxxbridge1
} // namespace rust

#if __cplusplus >= 201402L
#define CXX_DEFAULT_VALUE(value) = value
#else
#define CXX_DEFAULT_VALUE(value)
#endif

namespace mixer {
  struct Status;
  struct HeaderView;
  struct RequestInfo;
  struct ResponseInfo;
  enum class HeaderOpKind : ::std::uint8_t;
  struct HeaderOp;
  struct CheckResult;
  enum class CheckState : ::std::uint8_t;
  struct CheckStart;
  struct CreateResult;
  struct SwapResult;
  struct ReportResult;
  struct MutateResult;
  enum class Direction : ::std::uint8_t;
  struct MutationState;
  struct MutationPush;
  struct HttpHeader;
  struct HttpRequest;
  enum class CalloutFailure : ::std::uint8_t;
  struct Pipeline;
  struct Worker;
  struct Task;
  struct MutationStream;
  struct HttpDone;
  using HostDispatcher = ::mixer::HostDispatcher;
  using CheckCallback = ::mixer::CheckCallback;
}

namespace mixer {
#ifndef CXXBRIDGE1_STRUCT_mixer$Status
#define CXXBRIDGE1_STRUCT_mixer$Status
// A gRPC-style status: `code` 0 is OK.
struct Status final {
  ::std::int32_t code CXX_DEFAULT_VALUE(0);
  ::rust::String message;

  bool operator==(Status const &) const noexcept;
  bool operator!=(Status const &) const noexcept;
  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$Status

#ifndef CXXBRIDGE1_STRUCT_mixer$HeaderView
#define CXXBRIDGE1_STRUCT_mixer$HeaderView
// A header (or attribute) borrowed from the host for the duration of one call.
struct HeaderView final {
  ::rust::Slice<::std::uint8_t const> name;
  ::rust::Slice<::std::uint8_t const> value;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$HeaderView

#ifndef CXXBRIDGE1_STRUCT_mixer$RequestInfo
#define CXXBRIDGE1_STRUCT_mixer$RequestInfo
// The request as the host sees it: headers and connection facts, borrowed for the call.
// Empty slices and zero ports mean "unknown" (the attribute is left out of the bag).
struct RequestInfo final {
  // Request headers including the pseudo-headers (`:path`, `:method`, `:authority`).
  ::rust::Slice<::mixer::HeaderView const> headers;
  // Addresses as 4 or 16 raw octets in network order (Envoy's `Ip::ipv4()->address()`,
  // `ipv6()->address()`), or as text (`10.0.0.7`).
  ::rust::Slice<::std::uint8_t const> source_ip;
  ::std::int64_t source_port CXX_DEFAULT_VALUE(0);
  ::rust::Slice<::std::uint8_t const> destination_ip;
  ::std::int64_t destination_port CXX_DEFAULT_VALUE(0);
  // Peer identity from mTLS (`spiffe://...`).
  ::rust::Slice<::std::uint8_t const> source_principal;
  ::rust::Slice<::std::uint8_t const> destination_principal;
  ::rust::Slice<::std::uint8_t const> requested_server_name;
  bool mtls CXX_DEFAULT_VALUE(false);
  // Further string attributes by name (`destination.service.host`, ...); names the
  // running config does not know, or that are not of string type, are skipped.
  ::rust::Slice<::mixer::HeaderView const> attributes;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$RequestInfo

#ifndef CXXBRIDGE1_STRUCT_mixer$ResponseInfo
#define CXXBRIDGE1_STRUCT_mixer$ResponseInfo
// The response side of a finished stream, for [`report`].
struct ResponseInfo final {
  ::std::int64_t code CXX_DEFAULT_VALUE(0);
  ::rust::Slice<::mixer::HeaderView const> headers;
  ::std::int64_t request_total_size CXX_DEFAULT_VALUE(0);
  ::std::int64_t response_total_size CXX_DEFAULT_VALUE(0);
  ::std::int64_t duration_ns CXX_DEFAULT_VALUE(0);

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$ResponseInfo

#ifndef CXXBRIDGE1_ENUM_mixer$HeaderOpKind
#define CXXBRIDGE1_ENUM_mixer$HeaderOpKind
// How to change a header.
enum class HeaderOpKind : ::std::uint8_t {
  Set = 0,
  Append = 1,
  Remove = 2,
};
#endif // CXXBRIDGE1_ENUM_mixer$HeaderOpKind

#ifndef CXXBRIDGE1_STRUCT_mixer$HeaderOp
#define CXXBRIDGE1_STRUCT_mixer$HeaderOp
struct HeaderOp final {
  ::mixer::HeaderOpKind kind;
  ::rust::String name;
  ::rust::String value;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$HeaderOp

#ifndef CXXBRIDGE1_STRUCT_mixer$CheckResult
#define CXXBRIDGE1_STRUCT_mixer$CheckResult
// A check's decision, flattened for C++.
struct CheckResult final {
  ::mixer::Status status;
  bool allowed CXX_DEFAULT_VALUE(false);
  // HTTP status of the local reply when denied (a direct response's, else mapped from
  // the status code).
  ::std::uint16_t http_code CXX_DEFAULT_VALUE(0);
  // Body of the local reply (a direct response's, else the status message).
  ::rust::String body;
  ::rust::Vec<::mixer::HeaderOp> request_header_ops;
  ::rust::Vec<::mixer::HeaderOp> response_header_ops;
  bool cache_hit CXX_DEFAULT_VALUE(false);

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$CheckResult

#ifndef CXXBRIDGE1_ENUM_mixer$CheckState
#define CXXBRIDGE1_ENUM_mixer$CheckState
enum class CheckState : ::std::uint8_t {
  // Answered now: `result` is the decision; the callback will not be called.
  Done = 0,
  // A backend is being asked: the callback runs later on this worker's thread; `id`
  // cancels it (cancel_check).
  Pending = 1,
  // The check could not start (`result.status` says why); the callback will not be called.
  Error = 2,
};
#endif // CXXBRIDGE1_ENUM_mixer$CheckState

#ifndef CXXBRIDGE1_STRUCT_mixer$CheckStart
#define CXXBRIDGE1_STRUCT_mixer$CheckStart
struct CheckStart final {
  ::mixer::CheckState state;
  ::mixer::CheckResult result;
  ::std::uint64_t id CXX_DEFAULT_VALUE(0);

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$CheckStart

#ifndef CXXBRIDGE1_STRUCT_mixer$CreateResult
#define CXXBRIDGE1_STRUCT_mixer$CreateResult
struct CreateResult final {
  // OK, or why the pipeline could not be created (then `pipeline` refuses every call).
  ::mixer::Status status;
  // Every config error, one per line item (`file:line:col: object: message`).
  ::rust::Vec<::rust::String> errors;
  ::rust::Box<::mixer::Pipeline> pipeline;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$CreateResult

#ifndef CXXBRIDGE1_STRUCT_mixer$SwapResult
#define CXXBRIDGE1_STRUCT_mixer$SwapResult
struct SwapResult final {
  // OK when the new config is live; otherwise the running config stays in force.
  ::mixer::Status status;
  ::rust::Vec<::rust::String> errors;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$SwapResult

#ifndef CXXBRIDGE1_STRUCT_mixer$ReportResult
#define CXXBRIDGE1_STRUCT_mixer$ReportResult
struct ReportResult final {
  ::mixer::Status status;
  ::std::uint64_t instances_sent CXX_DEFAULT_VALUE(0);

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$ReportResult

#ifndef CXXBRIDGE1_STRUCT_mixer$MutateResult
#define CXXBRIDGE1_STRUCT_mixer$MutateResult
struct MutateResult final {
  ::mixer::Status status;
  // When `status` is not OK: the HTTP status to answer with (413 past a body limit, 400
  // for a request a handler refused, 502 for such a response, 500 otherwise).
  ::std::uint16_t http_status CXX_DEFAULT_VALUE(0);
  ::rust::Vec<::mixer::HeaderOp> header_ops;
  bool body_replaced CXX_DEFAULT_VALUE(false);
  ::rust::Vec<::std::uint8_t> body;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$MutateResult

#ifndef CXXBRIDGE1_ENUM_mixer$Direction
#define CXXBRIDGE1_ENUM_mixer$Direction
// Which message a mutation stream rewrites (Envoy: `decodeData` sees the request,
// `encodeData` the response).
enum class Direction : ::std::uint8_t {
  Request = 0,
  Response = 1,
};
#endif // CXXBRIDGE1_ENUM_mixer$Direction

#ifndef CXXBRIDGE1_STRUCT_mixer$MutationState
#define CXXBRIDGE1_STRUCT_mixer$MutationState
// Where a mutation stream stands (mixer::mutation_state).
struct MutationState final {
  // Not OK: the stream failed (answer `http_status`).
  ::mixer::Status status;
  ::std::uint16_t http_status CXX_DEFAULT_VALUE(0);
  // True: hold the message's headers and push the body (the stream keeps it, up to
  // `body_limit` bytes); false: apply `header_ops` now and let the body through.
  bool buffers_body CXX_DEFAULT_VALUE(false);
  ::std::uint64_t body_limit CXX_DEFAULT_VALUE(0);
  // The header changes, final when the stream does not buffer the body.
  ::rust::Vec<::mixer::HeaderOp> header_ops;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$MutationState

#ifndef CXXBRIDGE1_STRUCT_mixer$MutationPush
#define CXXBRIDGE1_STRUCT_mixer$MutationPush
// What pushing one body chunk did (mixer::mutation_push).
struct MutationPush final {
  // Not OK: the stream failed for good (answer `http_status`: 413 past the limit).
  ::mixer::Status status;
  ::std::uint16_t http_status CXX_DEFAULT_VALUE(0);
  // True: the stream kept the chunk (drop it from the proxy's buffer); false: forward it.
  bool held CXX_DEFAULT_VALUE(false);

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$MutationPush

#ifndef CXXBRIDGE1_STRUCT_mixer$HttpHeader
#define CXXBRIDGE1_STRUCT_mixer$HttpHeader
struct HttpHeader final {
  ::rust::String name;
  ::rust::String value;

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$HttpHeader

#ifndef CXXBRIDGE1_STRUCT_mixer$HttpRequest
#define CXXBRIDGE1_STRUCT_mixer$HttpRequest
// An HTTP callout the library asks the host to make.
struct HttpRequest final {
  // Envoy: the cluster name; other hosts: `host:port`.
  ::rust::String authority;
  ::rust::String method;
  ::rust::String path;
  ::rust::Vec<::mixer::HttpHeader> headers;
  ::rust::Vec<::std::uint8_t> body;
  ::std::uint64_t timeout_ms CXX_DEFAULT_VALUE(0);

  using IsRelocatable = ::std::true_type;
};
#endif // CXXBRIDGE1_STRUCT_mixer$HttpRequest

#ifndef CXXBRIDGE1_ENUM_mixer$CalloutFailure
#define CXXBRIDGE1_ENUM_mixer$CalloutFailure
// Why a callout failed (mixer::http_fail).
enum class CalloutFailure : ::std::uint8_t {
  Timeout = 0,
  Connection = 1,
  Cancelled = 2,
};
#endif // CXXBRIDGE1_ENUM_mixer$CalloutFailure

#ifndef CXXBRIDGE1_STRUCT_mixer$Pipeline
#define CXXBRIDGE1_STRUCT_mixer$Pipeline
// A pipeline: the live config (shared read-only by every worker) and the platform.
struct Pipeline final : public ::rust::Opaque {
  ~Pipeline() = delete;

private:
  friend ::rust::layout;
  struct layout {
    static ::std::size_t size() noexcept;
    static ::std::size_t align() noexcept;
  };
};
#endif // CXXBRIDGE1_STRUCT_mixer$Pipeline

#ifndef CXXBRIDGE1_STRUCT_mixer$Worker
#define CXXBRIDGE1_STRUCT_mixer$Worker
// One worker thread's handle on a pipeline.
struct Worker final : public ::rust::Opaque {
  ~Worker() = delete;

private:
  friend ::rust::layout;
  struct layout {
    static ::std::size_t size() noexcept;
    static ::std::size_t align() noexcept;
  };
};
#endif // CXXBRIDGE1_STRUCT_mixer$Worker

#ifndef CXXBRIDGE1_STRUCT_mixer$Task
#define CXXBRIDGE1_STRUCT_mixer$Task
// A unit of work the host runs on a worker thread with `run_task`.
struct Task final : public ::rust::Opaque {
  ~Task() = delete;

private:
  friend ::rust::layout;
  struct layout {
    static ::std::size_t size() noexcept;
    static ::std::size_t align() noexcept;
  };
};
#endif // CXXBRIDGE1_STRUCT_mixer$Task

#ifndef CXXBRIDGE1_STRUCT_mixer$MutationStream
#define CXXBRIDGE1_STRUCT_mixer$MutationStream
// One message being mutated while its body arrives in chunks.
struct MutationStream final : public ::rust::Opaque {
  ~MutationStream() = delete;

private:
  friend ::rust::layout;
  struct layout {
    static ::std::size_t size() noexcept;
    static ::std::size_t align() noexcept;
  };
};
#endif // CXXBRIDGE1_STRUCT_mixer$MutationStream

#ifndef CXXBRIDGE1_STRUCT_mixer$HttpDone
#define CXXBRIDGE1_STRUCT_mixer$HttpDone
// The completion of an HTTP callout.
struct HttpDone final : public ::rust::Opaque {
  ~HttpDone() = delete;

private:
  friend ::rust::layout;
  struct layout {
    static ::std::size_t size() noexcept;
    static ::std::size_t align() noexcept;
  };
};
#endif // CXXBRIDGE1_STRUCT_mixer$HttpDone

// Loads and compiles `config_yaml` (Istio-style YAML documents) against the built-in
// adapters. `main` is the host's main-thread dispatcher (list refreshes, flushes).
::mixer::CreateResult create_pipeline(::rust::Slice<::std::uint8_t const> config_yaml, ::std::unique_ptr<::mixer::HostDispatcher> main) noexcept;

// Replaces the live config; on any error the running config stays in force.
// Checks in flight finish on the config they started with.
::mixer::SwapResult swap_config(::mixer::Pipeline const &pipeline, ::rust::Slice<::std::uint8_t const> config_yaml) noexcept;

// Delivers buffered reports and flushes every handler.
::mixer::Status flush(::mixer::Pipeline const &pipeline) noexcept;

// A handle for one worker thread, with that thread's dispatcher.
::rust::Box<::mixer::Worker> create_worker(::mixer::Pipeline const &pipeline, ::std::unique_ptr<::mixer::HostDispatcher> dispatcher) noexcept;

// Starts a check. `callback` is called only when the result is `Pending`. With a null
// `callback`, a check that would go asynchronous is cancelled and returns `Error`.
::mixer::CheckStart check(::mixer::Worker const &worker, ::mixer::RequestInfo const &request, ::std::unique_ptr<::mixer::CheckCallback> callback) noexcept;

// Cancels a pending check (Envoy: onDestroy); its callback is deleted without being
// called. Unknown or finished ids are a no-op. Call on the worker's thread.
void cancel_check(::mixer::Worker const &worker, ::std::uint64_t id) noexcept;

// Sends the finished request to the report handlers.
::mixer::ReportResult report(::mixer::Worker const &worker, ::mixer::RequestInfo const &request, ::mixer::ResponseInfo const &response) noexcept;

// Runs the mutation handlers over one whole request (headers in `request`, `body`).
::mixer::MutateResult mutate(::mixer::Worker const &worker, ::mixer::RequestInfo const &request, ::rust::Slice<::std::uint8_t const> body) noexcept;

// Starts mutating the `direction` message when its headers are known: matches the
// rules and evaluates their instances now. `response` is read for a response only.
// Then `mutation_state`, `mutation_push` per body chunk, and `mutation_finish`.
::rust::Box<::mixer::MutationStream> mutation_stream(::mixer::Worker const &worker, ::mixer::RequestInfo const &request, ::mixer::ResponseInfo const &response, ::mixer::Direction direction) noexcept;

// Whether the stream failed, holds the body, and its header changes so far.
::mixer::MutationState mutation_state(::mixer::MutationStream const &stream) noexcept;

// Takes the next body chunk. Past the body limit the stream fails (HTTP 413) without
// keeping the chunk.
::mixer::MutationPush mutation_push(::mixer::MutationStream &stream, ::rust::Slice<::std::uint8_t const> chunk) noexcept;

// Ends the message: header changes and the new body (`body_replaced`).
::mixer::MutateResult mutation_finish(::rust::Box<::mixer::MutationStream> stream) noexcept;

// Number of pending checks this worker holds (for tests and stats).
::std::uint64_t pending_checks(::mixer::Worker const &worker) noexcept;

// Runs a task given to HostDispatcher::schedule or ::post.
::mixer::Status run_task(::rust::Box<::mixer::Task> task) noexcept;

// Completes an HTTP callout with the backend's response.
::mixer::Status http_complete(::rust::Box<::mixer::HttpDone> done, ::std::uint16_t status, ::rust::Slice<::mixer::HeaderView const> headers, ::rust::Slice<::std::uint8_t const> body) noexcept;

// Fails an HTTP callout.
::mixer::Status http_fail(::rust::Box<::mixer::HttpDone> done, ::mixer::CalloutFailure failure, ::rust::Slice<::std::uint8_t const> message) noexcept;

// Test-only: panics inside the panic boundary; returns the INTERNAL status it becomes.
::mixer::Status debug_panic_for_tests(::rust::Slice<::std::uint8_t const> message) noexcept;
} // namespace mixer

#ifdef __clang__
#pragma clang diagnostic pop
#endif // __clang__
