#pragma once
// The pickle opcodes, shared by the unpickler (pickle_machine.hpp) and the pickler
// (pickle_writer.hpp) so the two speak one vocabulary. Names follow Python's pickle module.

#include <cstdint>

namespace graft::detail {

/// One pickle opcode byte.
enum class pickle_op : std::uint8_t {
  // protocol 0 and 1
  mark = '(',
  stop = '.',
  pop = '0',
  pop_mark = '1',
  dup = '2',
  float_text = 'F',      ///< FLOAT
  int_text = 'I',        ///< INT (also 00/01 for False/True)
  binint = 'J',
  binint1 = 'K',
  long_text = 'L',       ///< LONG
  binint2 = 'M',
  none = 'N',
  persid = 'P',
  binpersid = 'Q',
  reduce = 'R',
  string = 'S',
  binstring = 'T',
  short_binstring = 'U',
  unicode = 'V',
  binunicode = 'X',
  append = 'a',
  build = 'b',
  global = 'c',
  dict = 'd',
  empty_dict = '}',
  appends = 'e',
  get = 'g',
  binget = 'h',
  inst = 'i',
  long_binget = 'j',
  list = 'l',
  empty_list = ']',
  obj = 'o',
  put = 'p',
  binput = 'q',
  long_binput = 'r',
  setitem = 's',
  tuple = 't',
  empty_tuple = ')',
  setitems = 'u',
  binfloat = 'G',
  // protocol 2
  proto = 0x80,
  newobj = 0x81,
  ext1 = 0x82,
  ext2 = 0x83,
  ext4 = 0x84,
  tuple1 = 0x85,
  tuple2 = 0x86,
  tuple3 = 0x87,
  newtrue = 0x88,
  newfalse = 0x89,
  long1 = 0x8a,
  long4 = 0x8b,
  // protocol 3
  binbytes = 'B',
  short_binbytes = 'C',
  // protocol 4
  short_binunicode = 0x8c,
  binunicode8 = 0x8d,
  binbytes8 = 0x8e,
  empty_set = 0x8f,
  additems = 0x90,
  frozenset = 0x91,
  newobj_ex = 0x92,
  stack_global = 0x93,
  memoize = 0x94,
  frame = 0x95,
  // protocol 5
  bytearray8 = 0x96,
  next_buffer = 0x97,
  readonly_buffer = 0x98,
};

/// The opcode as the byte a pickle holds.
constexpr char op_byte(pickle_op op) noexcept { return static_cast<char>(op); }

} // namespace graft::detail
