#include "io/storage/metadata.hpp"

#include "io/codec/crc32c.hpp"
#include "io/storage/provider.hpp"
#include "tests/scratch_dir.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace hast {
namespace {

constexpr uint64_t MiB = 1 << 20;

/// Fails the ops of one kind that overlap [begin, begin + length) (a flush:
/// every flush) with `error`, as a failing disk would.
class range_fault final : public fault_source {
public:
  range_fault(io_kind kind, uint64_t begin, uint64_t length, int error = EIO)
      : kind_(kind), begin_(begin), end_(begin + length), error_(error) {}

  int fault(io_kind kind, uint64_t offset, uint64_t length) const override {
    if (kind != kind_)
      return 0;
    if (kind == io_kind::flush)
      return error_;
    return length > 0 && offset < end_ && begin_ < offset + length ? error_ : 0;
  }

private:
  io_kind kind_;
  uint64_t begin_;
  uint64_t end_;
  int error_;
};

class TempDir : public scratch_test {
protected:

  provider make(const std::string &name, uint64_t size) {
    auto p = provider::create_file(path(name), size);
    EXPECT_TRUE(p) << p.error().message();
    return std::move(*p);
  }

  // Raw access that bypasses the provider, as a crash or a bad disk would.
  std::vector<uint8_t> raw_read(const std::string &name, uint64_t off, size_t len) {
    std::vector<uint8_t> out(len);
    int fd = ::open(path(name).c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::pread(fd, out.data(), len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    ::close(fd);
    return out;
  }
  void raw_write(const std::string &name, uint64_t off, const void *data, size_t len) {
    int fd = ::open(path(name).c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, data, len, static_cast<off_t>(off)), static_cast<ssize_t>(len));
    ::close(fd);
  }
  void flip_byte(const std::string &name, uint64_t off) {
    auto b = raw_read(name, off, 1);
    b[0] ^= 0x5A;
    raw_write(name, off, b.data(), 1);
  }

};

// --- CRC-32C ----------------------------------------------------------------

TEST(Crc32c, MatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(detail::crc32c_portable("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST(Crc32c, MatchesKnownVectorsOfZerosAndOnes) {
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF);
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu); // RFC 3720 B.4
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(Crc32c, HardwareAndTableAgreeAndChain) {
  std::mt19937_64 rng(42);
  std::vector<uint8_t> data(10000);
  for (auto &b : data)
    b = static_cast<uint8_t>(rng());
  for (size_t len : {0, 1, 7, 8, 9, 63, 64, 1000, 4096, 10000}) {
    for (size_t start : {0, 1, 3}) {
      if (start + len > data.size())
        continue;
      auto whole = crc32c(data.data() + start, len);
      EXPECT_EQ(whole, detail::crc32c_portable(data.data() + start, len)) << len;
      auto half = len / 2;
      EXPECT_EQ(crc32c(data.data() + start + half, len - half, crc32c(data.data() + start, half)),
                whole);
    }
  }
}

// --- provider ---------------------------------------------------------------

using Provider = TempDir;

TEST_F(Provider, CreateFileExtendsButNeverShrinks) {
  {
    auto p = make("disk", 8 * MiB);
    EXPECT_EQ(p.size(), 8 * MiB);
    EXPECT_FALSE(p.is_block_device());
    EXPECT_TRUE(p.writable());
  }
  auto bigger = provider::create_file(path("disk"), 16 * MiB);
  ASSERT_TRUE(bigger);
  EXPECT_EQ(bigger->size(), 16 * MiB);
  auto smaller = provider::create_file(path("disk"), 4 * MiB);
  ASSERT_TRUE(smaller);
  EXPECT_EQ(smaller->size(), 16 * MiB);
}

TEST_F(Provider, OpenNamesThePathAndTheReason) {
  auto p = provider::open(path("missing"), false);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code(), errc::io_error);
  EXPECT_NE(p.error().message().find(path("missing")), std::string::npos);
  EXPECT_NE(p.error().message().find("No such file"), std::string::npos);
  auto d = provider::open(dir_.string(), false);
  EXPECT_FALSE(d);
  auto f = provider::create_file(dir_.string(), MiB);
  EXPECT_FALSE(f);
}

TEST_F(Provider, UnalignedIoGoesThroughABounceBuffer) {
  auto p = make("disk", MiB);
  std::vector<uint8_t> pattern(10000);
  for (size_t i = 0; i < pattern.size(); ++i)
    pattern[i] = static_cast<uint8_t>(i * 7 + 1);
  // Surround the target with known bytes to check the read-modify-write.
  std::vector<uint8_t> background(3 * 4096 + 16384, 0xEE);
  ASSERT_TRUE(p.write(background.data(), background.size(), 0));
  ASSERT_TRUE(p.write(pattern.data() + 1, 5000, 4097));
  std::vector<uint8_t> back(5000 + 2);
  ASSERT_TRUE(p.read(back.data() + 1, 5000, 4097));
  EXPECT_EQ(0, std::memcmp(back.data() + 1, pattern.data() + 1, 5000));
  auto raw = raw_read("disk", 4096, 1);
  EXPECT_EQ(raw[0], 0xEE);
  raw = raw_read("disk", 4097 + 5000, 1);
  EXPECT_EQ(raw[0], 0xEE);
  // Within one block.
  ASSERT_TRUE(p.write("xy", 2, 100));
  EXPECT_EQ(raw_read("disk", 99, 4), (std::vector<uint8_t>{0xEE, 'x', 'y', 0xEE}));
}

TEST_F(Provider, IoBeyondTheEndIsRefused) {
  auto p = make("disk", MiB);
  char buf[4096] = {};
  EXPECT_EQ(p.read(buf, sizeof buf, MiB).code(), errc::invalid_argument);
  EXPECT_EQ(p.write(buf, sizeof buf, MiB - 1).code(), errc::invalid_argument);
  EXPECT_EQ(p.write_zeroes(MiB - 4096, 8192, true).code(), errc::invalid_argument);
}

TEST_F(Provider, InjectedReadErrorsFailOverlappingReadsOnly) {
  auto p = make("disk", MiB);
  p.set_fault_source(std::make_shared<range_fault>(io_kind::read, 8192, 4096));
  std::vector<uint8_t> buf(4096);
  EXPECT_TRUE(p.read(buf.data(), 4096, 4096));
  auto st = p.read(buf.data(), 4096, 8192);
  EXPECT_EQ(st.code(), errc::io_error);
  EXPECT_NE(st.message().find("Input/output error (injected)"), std::string::npos) << st.message();
  EXPECT_FALSE(p.read(buf.data(), 2, 12287));
  EXPECT_TRUE(p.read(buf.data(), 4096, 12288));
  EXPECT_TRUE(p.write(buf.data(), 4096, 8192)) << "a read fault fails reads only";
  p.set_fault_source(nullptr);
  EXPECT_TRUE(p.read(buf.data(), 4096, 8192));
}

TEST_F(Provider, AnInjectedWriteErrorNamesItsErrnoAndLeavesTheDiskAsItWas) {
  auto p = make("disk", MiB);
  std::vector<uint8_t> old(8192, 0xEE), fresh(8192, 0x11);
  ASSERT_TRUE(p.write(old.data(), old.size(), 4096));
  p.set_fault_source(std::make_shared<range_fault>(io_kind::write, 8192, 1, ENOSPC));
  auto st = p.write(fresh.data(), fresh.size(), 4096);
  EXPECT_EQ(st.code(), errc::io_error);
  EXPECT_NE(st.message().find(std::strerror(ENOSPC)), std::string::npos) << st.message();
  EXPECT_FALSE(p.write(fresh.data(), 10, 8190)) << "unaligned, through the bounce buffer";
  EXPECT_EQ(raw_read("disk", 4096, 8192), old);
  EXPECT_TRUE(p.write(fresh.data(), 4096, 0));
  EXPECT_TRUE(p.flush());
  EXPECT_TRUE(p.discard(8192, 4096)) << "a write fault does not fail discards";
}

TEST_F(Provider, FlushDiscardAndZeroingAskTheFaultSourceForTheirOwnKind) {
  auto p = make("disk", MiB);
  std::vector<uint8_t> ones(65536, 0xFF);
  ASSERT_TRUE(p.write(ones.data(), ones.size(), 0));
  p.set_fault_source(std::make_shared<range_fault>(io_kind::flush, 0, 0, EROFS));
  auto st = p.flush();
  EXPECT_NE(st.message().find(std::strerror(EROFS)), std::string::npos) << st.message();
  p.set_fault_source(std::make_shared<range_fault>(io_kind::discard, 0, 65536));
  EXPECT_FALSE(p.discard(4096, 4096));
  EXPECT_TRUE(p.write_zeroes(4096, 100, true)) << "zeroing is not a discard";
  p.set_fault_source(std::make_shared<range_fault>(io_kind::write_zeroes, 0, 65536));
  EXPECT_FALSE(p.write_zeroes(8192, 5000, false));
  EXPECT_TRUE(p.discard(40960, 4096));
  EXPECT_TRUE(p.flush());
  // Only the two unfaulted zeroings landed.
  EXPECT_EQ(raw_read("disk", 4096, 1)[0], 0);
  EXPECT_EQ(raw_read("disk", 4196, 1)[0], 0xFF);
  EXPECT_EQ(raw_read("disk", 8192, 1)[0], 0xFF);
  EXPECT_EQ(raw_read("disk", 40960, 1)[0], 0);
}

TEST_F(Provider, DiscardAndWriteZeroesReadBackAsZeros) {
  auto p = make("disk", MiB);
  std::vector<uint8_t> ones(MiB, 0xFF), back(MiB);
  ASSERT_TRUE(p.write(ones.data(), ones.size(), 0));
  ASSERT_TRUE(p.discard(4096, 65536));
  ASSERT_TRUE(p.write_zeroes(100000, 5000, false)); // unaligned edges
  ASSERT_TRUE(p.write_zeroes(200704, 8192, true));
  ASSERT_TRUE(p.flush());
  ASSERT_TRUE(p.read(back.data(), back.size(), 0));
  for (size_t i = 0; i < back.size(); ++i) {
    bool zero = (i >= 4096 && i < 4096 + 65536) || (i >= 100000 && i < 105000)
                || (i >= 200704 && i < 200704 + 8192);
    ASSERT_EQ(back[i], zero ? 0 : 0xFF) << "at " << i;
  }
}

TEST_F(Provider, ASecondExclusiveLockIsRefusedAsBusy) {
  auto a = make("disk", MiB);
  ASSERT_TRUE(a.lock());
  auto b = provider::open(path("disk"), true);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->lock().code(), errc::busy);
}

TEST_F(Provider, MovingTransfersOwnershipOfTheDescriptor) {
  auto a = make("disk", MiB);
  int fd = a.fd();
  provider b = std::move(a);
  EXPECT_EQ(b.fd(), fd);
  EXPECT_EQ(b.size(), MiB);
  char c = 0;
  EXPECT_TRUE(b.read(&c, 1, 0));
}

// --- layout -----------------------------------------------------------------

TEST(Layout, ForSixtyFourMiBWithTwoMiBExtents) {
  auto l = compute_layout(64 * MiB, 2 * MiB);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->slot_size, 8192u);
  EXPECT_EQ(l->data_offset, 16384u);
  EXPECT_EQ(l->datasize, 64 * MiB - 16384);
  EXPECT_EQ(l->extents, 32u);
  EXPECT_EQ(l->bitmap_bytes, 4u);
}

TEST(Layout, DataFitsTheMediaAndTheSlotsFitTheBitmap) {
  for (uint64_t media : {4 * MiB + 12345, 100 * MiB + 4095, MiB << 20, (MiB << 20) + 777})
    for (uint32_t es : {4096u, 65536u, 2u * 1024 * 1024}) {
      auto l = compute_layout(media, es);
      ASSERT_TRUE(l) << media << " " << es;
      EXPECT_LE(l->data_offset + l->datasize, media);
      EXPECT_EQ(l->datasize % 4096, 0u);
      EXPECT_EQ(l->extents, (l->datasize + es - 1) / es);
      EXPECT_EQ(l->bitmap_bytes, (l->extents + 7) / 8);
      EXPECT_GE(l->slot_size, (4096 + l->bitmap_bytes + 4095) / 4096 * 4096);
      EXPECT_EQ(l->slot_size % 4096, 0u);
      EXPECT_EQ(l->data_offset, 2 * l->slot_size);
      EXPECT_EQ(l->ceiling, (l->slot_size - 4096) * 8 * es);
      EXPECT_GE(l->ceiling, l->datasize);
      // At most a few blocks are wasted.
      EXPECT_LT(media - l->data_offset - l->datasize, 4 * 4096 + 2 * l->slot_size);
    }
  // 1 TiB with 2 MiB extents: 524288 extents, a 64 KiB bitmap (as in HAST).
  auto big = compute_layout(1ull << 40, 2 * MiB);
  EXPECT_EQ(big->bitmap_bytes, 65536u);
}

// --- room to grow -------------------------------------------------------------

TEST(Layout, TheDefaultRoomDescribesSixteenTimesTheMedia) {
  // 1 TiB with 2 MiB extents: slots for 16 TiB (a 1 MiB bitmap), where the
  // layout without room (a 69632-byte slot) could not grow at all.
  auto l = compute_layout(1ull << 40, 2 * MiB);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->slot_size, 4096 + MiB);
  EXPECT_EQ(l->ceiling, 16ull << 40);
  EXPECT_EQ(l->datasize, (1ull << 40) - 2 * (4096 + MiB));
  // Up to 4 GiB the 16-fold room fits in the smallest slot: the layout is
  // the one hast always made.
  auto small = compute_layout(4096 * MiB, 2 * MiB);
  EXPECT_EQ(small->slot_size, 8192u);
  EXPECT_EQ(small->ceiling, 64 * 1024 * MiB);
  // 4 KiB extents: 16 times 1 GiB takes a 512 KiB bitmap.
  auto fine = compute_layout(1024 * MiB, 4096);
  EXPECT_EQ(fine->slot_size, 4096 + 512 * 1024u);
  EXPECT_EQ(fine->ceiling, 16 * 1024 * MiB);
  // A read finds slots only up to the larger of 1 MiB + 4 KiB and the
  // size 4 KiB extents over the media need, so 1 TiB with 4 KiB extents
  // gets no room beyond the rounding.
  auto big = compute_layout(1ull << 40, 4096);
  EXPECT_EQ(big->slot_size, 4096 + 32 * MiB);
  EXPECT_EQ(big->ceiling, 1ull << 40);
  // A media too small for the room keeps the layout without it.
  auto tight = compute_layout(2 * 8192 + 2 * MiB, 2 * MiB);
  ASSERT_TRUE(tight) << tight.error().message();
  EXPECT_EQ(tight->slot_size, 8192u);
}

TEST(Layout, AMaximumSizeSizesTheSlots) {
  // 64 GiB with 1 MiB extents: 65536 extents, an 8 KiB bitmap.
  auto l = compute_layout(64 * MiB, MiB, 64 * 1024 * MiB);
  ASSERT_TRUE(l) << l.error().message();
  EXPECT_EQ(l->slot_size, 12288u);
  EXPECT_EQ(l->data_offset, 24576u);
  EXPECT_EQ(l->datasize, 64 * MiB - 24576);
  EXPECT_EQ(l->bitmap_bytes, 8u);
  EXPECT_EQ(l->ceiling, 64 * 1024 * MiB);
  // The media size itself: no room beyond the rounding.
  auto none = compute_layout(64 * MiB, MiB, 64 * MiB);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_EQ(none->slot_size, 8192u);
}

TEST(Layout, AMaximumSizeBelowTheMediaOrBeyondWhatAReadFindsIsRefused) {
  auto below = compute_layout(64 * MiB, MiB, 32 * MiB);
  ASSERT_FALSE(below);
  EXPECT_EQ(below.error().code(), errc::invalid_argument);
  EXPECT_NE(below.error().message().find("smaller than the media"), std::string::npos);
  // 64 MiB of media: slots of at most 1 MiB + 4 KiB, so 4 KiB extents can
  // describe at most 32 GiB.
  auto far = compute_layout(64 * MiB, 4096, 64 * 1024 * MiB);
  ASSERT_FALSE(far);
  EXPECT_EQ(far.error().code(), errc::invalid_argument);
  EXPECT_NE(far.error().message().find("34359738368"), std::string::npos) << far.error().message();
  EXPECT_NE(far.error().message().find("larger extent size"), std::string::npos);
  auto most = compute_layout(64 * MiB, 4096, 32 * 1024 * MiB);
  ASSERT_TRUE(most) << most.error().message();
  EXPECT_EQ(most->slot_size, 4096 + MiB);
  // The media must hold the larger slots and one extent.
  auto full = compute_layout(2 * MiB + 8 * 4096, 2 * MiB, 1ull << 44);
  ASSERT_FALSE(full);
  EXPECT_NE(full.error().message().find("too small"), std::string::npos) << full.error().message();
}

TEST(Layout, RejectsExtentSizesThatAreNotPowerOfTwoMultiplesOf4096) {
  for (uint32_t es : {0u, 512u, 2048u, 3000u, 12288u, 4096u * 3, 2u * 1024 * 1024 + 4096}) {
    auto l = compute_layout(64 * MiB, es);
    ASSERT_FALSE(l) << es;
    EXPECT_EQ(l.error().code(), errc::invalid_argument);
    EXPECT_NE(l.error().message().find("power-of-two"), std::string::npos);
  }
}

TEST(Layout, RejectsMediaTooSmallForTwoSlotsAndOneExtent) {
  EXPECT_TRUE(compute_layout(2 * 8192 + 2 * MiB, 2 * MiB));
  auto l = compute_layout(2 * 8192 + 2 * MiB - 1, 2 * MiB);
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().code(), errc::invalid_argument);
  EXPECT_NE(l.error().message().find("too small"), std::string::npos);
  EXPECT_FALSE(compute_layout(0, 4096));
}

// --- slots ------------------------------------------------------------------

metadata sample() {
  metadata md;
  md.resource = "shared";
  md.datasize = 64 * MiB - 16384;
  md.extent_size = 2 * MiB;
  md.keepdirty = 64;
  md.data_offset = 16384;
  md.resuid = 0x0123456789ABCDEFull;
  md.localcnt = 7;
  md.remotecnt = 5;
  md.prevrole = role::primary;
  md.sequence = 42;
  md.bitmap = {0x01, 0x80, 0x00, 0x10};
  return md;
}

void expect_same(const metadata &a, const metadata &b) {
  EXPECT_EQ(a.resource, b.resource);
  EXPECT_EQ(a.datasize, b.datasize);
  EXPECT_EQ(a.extent_size, b.extent_size);
  EXPECT_EQ(a.keepdirty, b.keepdirty);
  EXPECT_EQ(a.data_offset, b.data_offset);
  EXPECT_EQ(a.resuid, b.resuid);
  EXPECT_EQ(a.localcnt, b.localcnt);
  EXPECT_EQ(a.remotecnt, b.remotecnt);
  EXPECT_EQ(a.prevrole, b.prevrole);
  EXPECT_EQ(a.sequence, b.sequence);
  EXPECT_EQ(a.bitmap, b.bitmap);
}

std::span<const uint8_t> bytes_of(const std::string &s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

TEST(Slot, EncodesAndDecodesEveryField) {
  auto md = sample();
  auto bytes = encode_slot(md);
  ASSERT_EQ(bytes.size(), 4096u + 4);
  EXPECT_EQ(bytes.substr(0, 8), "HASTMETA");
  auto back = decode_slot(bytes_of(bytes));
  ASSERT_TRUE(back) << back.error().message();
  expect_same(md, *back);
  for (auto r : {role::init, role::primary, role::secondary}) {
    md.prevrole = r;
    EXPECT_EQ(decode_slot(bytes_of(encode_slot(md)))->prevrole, r);
  }
}

TEST(Slot, StoresLittleEndianFieldsAtFixedOffsets) {
  auto bytes = encode_slot(sample());
  auto u64 = [&](size_t off) {
    uint64_t v = 0;
    for (size_t i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[off + i])) << (8 * i);
    return v;
  };
  EXPECT_EQ(static_cast<uint8_t>(bytes[8]), 1); // version
  EXPECT_EQ(u64(16), 42u);                      // sequence
  EXPECT_EQ(bytes.substr(24, 7), std::string("shared\0", 7));
  EXPECT_EQ(u64(152), 64 * MiB - 16384); // datasize
  EXPECT_EQ(u64(176), 0x0123456789ABCDEFull);
  EXPECT_EQ(static_cast<uint8_t>(bytes[200]), 2); // prevrole primary (HAST's code)
  EXPECT_EQ(static_cast<uint8_t>(bytes[204]), 4); // bitmap bytes
}

TEST(Slot, DetectsAnySingleFlippedByte) {
  auto bytes = encode_slot(sample());
  for (size_t off : {size_t{8}, size_t{16}, size_t{30}, size_t{160}, size_t{209}, size_t{3000},
                     size_t{4096}, size_t{4099}}) {
    auto copy = bytes;
    copy[off] = static_cast<char>(copy[off] ^ 0x01);
    auto r = decode_slot(bytes_of(copy));
    ASSERT_FALSE(r) << off;
    EXPECT_EQ(r.error().code(), errc::bad_metadata) << off;
  }
}

TEST(Slot, WithoutMagicIsNotCreated) {
  std::string zeros(4096, '\0');
  EXPECT_EQ(decode_slot(bytes_of(zeros)).error().code(), errc::not_created);
}

TEST(Slot, AnUnknownVersionIsReportedAsSuch) {
  auto bytes = encode_slot(sample());
  bytes[8] = 2;
  // Recompute the checksum so that only the version is wrong.
  bytes.replace(208, 4, 4, '\0');
  auto crc = crc32c(bytes.data(), bytes.size());
  for (int i = 0; i < 4; ++i)
    bytes[208 + static_cast<size_t>(i)] = static_cast<char>(crc >> (8 * i));
  auto r = decode_slot(bytes_of(bytes));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::bad_metadata);
  EXPECT_NE(r.error().message().find("version 2"), std::string::npos);
}

// --- on a provider ------------------------------------------------------------

using Metadata = TempDir;

TEST_F(Metadata, CreateThenReadRoundTrips) {
  auto p = make("disk", 64 * MiB);
  auto created = create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_NE(created->resuid, 0u);
  EXPECT_EQ(created->sequence, 1u);
  EXPECT_EQ(created->prevrole, role::init);
  EXPECT_EQ(created->localcnt, 0u);
  EXPECT_EQ(created->data_offset, 16384u);
  EXPECT_EQ(created->datasize, 64 * MiB - 16384);
  EXPECT_EQ(created->bitmap, std::vector<uint8_t>(4, 0));
  auto md = read_metadata(p, "shared");
  ASSERT_TRUE(md) << md.error().message();
  expect_same(*created, *md);

  auto again = create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  ASSERT_TRUE(again);
  EXPECT_NE(again->resuid, created->resuid);
}

TEST_F(Metadata, WritesAlternateSlotsAndReadTakesTheNewest) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  for (uint64_t i = 0; i < 5; ++i) {
    md.localcnt = 10 + i;
    md.bitmap[i % 4] ^= static_cast<uint8_t>(1u << i);
    md.prevrole = i % 2 ? role::secondary : role::primary;
    ASSERT_TRUE(write_metadata(p, md));
    EXPECT_EQ(md.sequence, 2 + i);
    auto back = read_metadata(p, "shared");
    ASSERT_TRUE(back) << back.error().message();
    expect_same(md, *back);
  }
  // Sequence 6 is in slot A (offset 0), 5 in slot B (offset 8192).
  EXPECT_EQ(raw_read("disk", 16, 1)[0], 6);
  EXPECT_EQ(raw_read("disk", 8192 + 16, 1)[0], 5);
}

TEST_F(Metadata, AFlippedByteInTheActiveSlotFallsBackToThePreviousSlot) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  md.localcnt = 1;
  ASSERT_TRUE(write_metadata(p, md)); // sequence 2, slot A
  md.localcnt = 2;
  ASSERT_TRUE(write_metadata(p, md)); // sequence 3, slot B
  flip_byte("disk", 8192 + 4096 + 1); // slot B's bitmap
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->sequence, 2u);
  EXPECT_EQ(back->localcnt, 1u);

  // The next write goes to slot B again and repairs it.
  md = *back;
  md.localcnt = 3;
  ASSERT_TRUE(write_metadata(p, md));
  EXPECT_EQ(md.sequence, 3u);
  EXPECT_EQ(read_metadata(p, "shared")->localcnt, 3u);
}

TEST_F(Metadata, SlotBIsFoundWhenSlotAsHeaderIsDestroyed) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  md.localcnt = 9;
  ASSERT_TRUE(write_metadata(p, md)); // 2 in A
  ASSERT_TRUE(write_metadata(p, md)); // 3 in B
  md.localcnt = 10;
  ASSERT_TRUE(write_metadata(p, md)); // 4 in A
  // Garbage over slot A's layout fields: B is located from the others.
  uint32_t junk = 0xFFFFFFFF;
  raw_write("disk", 204, &junk, 4);
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->sequence, 3u);
  EXPECT_EQ(back->localcnt, 9u);
  // Slot A's whole header zeroed: B is found by scanning.
  std::vector<uint8_t> zeros(4096, 0);
  raw_write("disk", 0, zeros.data(), zeros.size());
  back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->sequence, 3u);
}

TEST_F(Metadata, AHalfWrittenUpdateLeavesThePreviousState) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  md.localcnt = 1;
  md.bitmap = {0xFF, 0, 0, 0};
  ASSERT_TRUE(write_metadata(p, md)); // sequence 2 in slot A
  // The next update (sequence 3, slot B) tears after half of its slot.
  auto next = md;
  next.sequence = 3;
  next.localcnt = 2;
  next.bitmap = {0, 0, 0, 0x0F};
  auto slot = encode_slot(next);
  slot.resize(8192, '\0');
  raw_write("disk", 8192, slot.data(), 4096); // header new, bitmap old
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->sequence, 2u);
  EXPECT_EQ(back->localcnt, 1u);
  EXPECT_EQ(back->bitmap, (std::vector<uint8_t>{0xFF, 0, 0, 0}));
  // Torn inside the header itself.
  raw_write("disk", 8192, slot.data(), 100);
  EXPECT_EQ(read_metadata(p, "shared")->sequence, 2u);
}

TEST_F(Metadata, AFailingSlotWriteIsAnErrorAndTheOtherSlotStillReads) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  md.localcnt = 1;
  ASSERT_TRUE(write_metadata(p, md)); // sequence 2 in slot A
  // Offsets are the provider's: slot B begins at 8192.
  p.set_fault_source(std::make_shared<range_fault>(io_kind::write, 8192, 8192));
  md.localcnt = 2;
  auto st = write_metadata(p, md);
  EXPECT_EQ(st.code(), errc::io_error);
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->sequence, 2u);
  EXPECT_EQ(back->localcnt, 1u);
  // A failing flush fails the update too.
  p.set_fault_source(std::make_shared<range_fault>(io_kind::flush, 0, 0));
  md = *back;
  EXPECT_FALSE(write_metadata(p, md));
  // Neither slot readable (A at 0, B at 8192).
  p.set_fault_source(std::make_shared<range_fault>(io_kind::read, 0, 16384));
  EXPECT_FALSE(read_metadata(p, "shared"));
}

TEST_F(Metadata, BothSlotsCorruptIsBadMetadataNamingEachSlot) {
  auto p = make("disk", 64 * MiB);
  ASSERT_TRUE(create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB));
  flip_byte("disk", 40);
  flip_byte("disk", 8192 + 40);
  auto r = read_metadata(p, "shared");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::bad_metadata);
  EXPECT_NE(r.error().message().find("slot A: checksum mismatch"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("slot B: checksum mismatch"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find(path("disk")), std::string::npos);
}

TEST_F(Metadata, ANeverCreatedProviderIsNotCreated) {
  auto p = make("disk", 64 * MiB);
  auto r = read_metadata(p, "shared");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::not_created);
  EXPECT_NE(r.error().message().find("not created"), std::string::npos);
  auto tiny = make("tiny", 100);
  EXPECT_EQ(read_metadata(tiny, "shared").error().code(), errc::not_created);
}

TEST_F(Metadata, AnotherResourcesProviderIsRefused) {
  auto p = make("disk", 64 * MiB);
  ASSERT_TRUE(create_metadata(p, "other", 2 * MiB, 64, 64 * MiB));
  auto r = read_metadata(p, "shared");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::wrong_resource);
  EXPECT_NE(r.error().message().find("'other'"), std::string::npos);
  EXPECT_TRUE(read_metadata(p, ""));
}

TEST_F(Metadata, CreateValidatesItsArguments) {
  auto p = make("disk", 64 * MiB);
  EXPECT_EQ(create_metadata(p, "r", 3000, 64, 64 * MiB).error().code(), errc::invalid_argument);
  EXPECT_EQ(create_metadata(p, "r", 2 * MiB, 64, 128 * MiB).error().code(), errc::invalid_argument);
  EXPECT_EQ(create_metadata(p, "r", 2 * MiB, 64, MiB).error().code(), errc::invalid_argument);
  EXPECT_EQ(create_metadata(p, std::string(128, 'x'), 2 * MiB, 64, 64 * MiB).error().code(),
            errc::invalid_argument);
  EXPECT_EQ(create_metadata(p, "r", 2 * MiB, 0, 64 * MiB).error().code(), errc::invalid_argument);
  EXPECT_TRUE(create_metadata(p, std::string(127, 'x'), 2 * MiB, 64, 64 * MiB));
  auto ro = provider::open(path("disk"), false);
  EXPECT_EQ(create_metadata(*ro, "r", 2 * MiB, 64, 64 * MiB).error().code(),
            errc::invalid_argument);
}

TEST_F(Metadata, RecreatingWithSmallerSlotsWipesTheOldSlotB) {
  auto p = make("disk", 1024 * MiB);
  // 4 KiB extents: a 32 KiB bitmap, slot B at 36864.
  auto old = *create_metadata(p, "shared", 4096, 64, 1024 * MiB, 1024 * MiB);
  ASSERT_EQ(old.data_offset, 2u * 36864);
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(write_metadata(p, old));
  auto fresh = *create_metadata(p, "shared", 2 * MiB, 64, 1024 * MiB);
  EXPECT_EQ(fresh.data_offset, 16384u);
  EXPECT_EQ(raw_read("disk", 36864, 8), std::vector<uint8_t>(8, 0));
  // Even with the new slot A gone, the old slot B is not resurrected.
  flip_byte("disk", 100);
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->resuid, fresh.resuid);
  EXPECT_EQ(back->sequence, 1u);
}

TEST_F(Metadata, AProviderShrunkBelowItsMetadataIsRefused) {
  auto p = make("disk", 64 * MiB);
  ASSERT_TRUE(create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB));
  ASSERT_EQ(::truncate(path("disk").c_str(), 32 * MiB), 0);
  auto q = provider::open(path("disk"), false);
  auto r = read_metadata(*q, "shared");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::bad_metadata);
  EXPECT_NE(r.error().message().find("shrunk"), std::string::npos);
}

// A header whose data size is near 2^64: with 2 MiB extents its extent
// count wraps to 0 in a naive sum, so it claims an empty bitmap and slots of
// one block, and data_offset + datasize wraps to a small number.
metadata wrapping_metadata(uint64_t sequence) {
  metadata md;
  md.resource = "shared";
  md.datasize = UINT64_MAX - 4095; // a multiple of 4096
  md.extent_size = 2 * MiB;
  md.keepdirty = 64;
  md.data_offset = 2 * 4096;
  md.resuid = 1;
  md.sequence = sequence;
  return md;
}

TEST(Slot, ADataSizeNear2To64IsRefusedNotWrapped) {
  auto bytes = encode_slot(wrapping_metadata(0));
  auto r = decode_slot(bytes_of(bytes));
  ASSERT_FALSE(r) << "accepted a data size of " << r->datasize;
  EXPECT_EQ(r.error().code(), errc::bad_metadata);
  EXPECT_NE(r.error().message().find("does not fit a data size"), std::string::npos)
      << r.error().message();
}

TEST_F(Metadata, AProviderWhoseSlotsClaimADataSizeNear2To64IsRefused) {
  auto p = make("disk", 64 * MiB);
  auto a = encode_slot(wrapping_metadata(0));
  auto b = encode_slot(wrapping_metadata(1));
  raw_write("disk", 0, a.data(), a.size());
  raw_write("disk", 4096, b.data(), b.size());
  auto r = read_metadata(p, "shared");
  ASSERT_FALSE(r) << "accepted a data size of " << r->datasize;
  EXPECT_EQ(r.error().code(), errc::bad_metadata);
}

TEST(Slot, ADataSizeThatIsNotWholeBlocksIsRefused) {
  auto md = sample();
  md.datasize -= 1;
  auto r = decode_slot(bytes_of(encode_slot(md)));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::bad_metadata);
  EXPECT_NE(r.error().message().find("multiple of 4096"), std::string::npos);
}

TEST(Render, PrintsHastsDumpLinesAndOurs) {
  auto md = sample();
  auto text = render_metadata(md);
  EXPECT_EQ(text, "resource: shared\n"
                  "    datasize: 67092480 (64MB)\n"
                  "    extentsize: 2097152 (2.0MB)\n"
                  "    keepdirty: 64\n"
                  "    localoff: 16384\n"
                  "    resuid: 81985529216486895\n"
                  "    localcnt: 7\n"
                  "    remotecnt: 5\n"
                  "    prevrole: primary\n"
                  "    version: 1\n"
                  "    sequence: 42\n"
                  "    dirty extents: 3 (6.0MB)\n"
                  "    local stale: no\n"
                  "    maxsize: 68719476736 (64GB)\n");
  auto j = metadata_json(md);
  EXPECT_EQ(j["name"], "shared");
  EXPECT_EQ(j["extentsize"], 2097152);
  EXPECT_EQ(j["resuid"], 0x0123456789ABCDEFull);
  EXPECT_EQ(j["prevrole"], "primary");
  EXPECT_EQ(j["dirty_extents"], 3);
  EXPECT_EQ(j["dirty_bytes"], 3 * 2 * MiB);
  EXPECT_EQ(j["maxsize"], 64ull << 30);
}

} // namespace
} // namespace hast

// --- online growth ------------------------------------------------------------

namespace hast {
namespace {

using Growth = TempDir;

TEST_F(Growth, RefreshSizeSeesAGrownFileAndNeverShrinks) {
  auto p = make("disk", 64 * MiB);
  ASSERT_EQ(::truncate(path("disk").c_str(), 96 * MiB), 0);
  EXPECT_EQ(p.size(), 64 * MiB);
  auto now = p.refresh_size();
  ASSERT_TRUE(now) << now.error().message();
  EXPECT_EQ(*now, 96 * MiB);
  EXPECT_EQ(p.size(), 96 * MiB);
  std::vector<uint8_t> block(4096, 0x5A);
  EXPECT_TRUE(p.write(block.data(), block.size(), 96 * MiB - 4096)); // the new end is usable
  ASSERT_EQ(::truncate(path("disk").c_str(), 80 * MiB), 0);
  EXPECT_EQ(*p.refresh_size(), 96 * MiB);
}

TEST_F(Growth, TheGrownSizeAndBitmapAreWrittenAndReadBack) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  md.bitmap[0] = 0x81;  // dirty extents survive the grow
  ASSERT_TRUE(write_metadata(p, md));
  auto old = md;
  ASSERT_EQ(::truncate(path("disk").c_str(), 128 * MiB), 0);
  auto target = growth_target(md, *p.refresh_size());
  ASSERT_TRUE(target) << target.error().message();
  EXPECT_EQ(*target, 128 * MiB - md.data_offset);
  ASSERT_TRUE(grow_metadata(md, *target));
  EXPECT_EQ(md.datasize, *target);
  EXPECT_EQ(md.data_offset, old.data_offset);  // the data never moves
  EXPECT_EQ(md.bitmap, (std::vector<uint8_t>{0x81, 0, 0, 0, 0, 0, 0, 0}));
  ASSERT_TRUE(write_metadata(p, md));
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  expect_same(md, *back);
  // The other slot still holds the size before the grow.
  auto slot = raw_read("disk", (old.sequence % 2) * (old.data_offset / 2), 8192);
  auto previous = decode_slot(slot);
  ASSERT_TRUE(previous) << previous.error().message();
  EXPECT_EQ(previous->datasize, old.datasize);
}

TEST_F(Growth, AGrowTornInItsSlotLeavesTheOldSize) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  auto old = md.datasize;
  ASSERT_EQ(::truncate(path("disk").c_str(), 128 * MiB), 0);
  ASSERT_TRUE(p.refresh_size());
  auto grown = md;
  ASSERT_TRUE(grow_metadata(grown, *growth_target(md, p.size())));
  // The grow's slot write (sequence 2, slot A) is torn after 100 bytes.
  grown.sequence = 2;
  auto slot = encode_slot(grown);
  raw_write("disk", 0, slot.data(), 100);
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->datasize, old);
  EXPECT_EQ(back->sequence, 1u);
  // Whole, it is the new size.
  raw_write("disk", 0, slot.data(), slot.size());
  EXPECT_EQ(read_metadata(p, "shared")->datasize, grown.datasize);
}

TEST_F(Growth, AProviderThatDidNotGrowIsRefusedWithWhatToDo) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 2 * MiB, 64, 64 * MiB);
  auto r = growth_target(md, p.size());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::invalid_argument);
  EXPECT_NE(r.error().message().find("did not grow"), std::string::npos) << r.error().message();
  // A few bytes more than a block do not make a larger data area either.
  EXPECT_FALSE(growth_target(md, md.data_offset + md.datasize + 4095));
  EXPECT_TRUE(growth_target(md, md.data_offset + md.datasize + 4096));
}

TEST_F(Growth, TheSlotsBoundTheGrowthAndTheErrorSaysHowFar) {
  // 4 KiB extents: the bitmap of a 64 MiB area already takes 2 KiB of the
  // slot's 4 KiB of room.
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", 4096, 64, 64 * MiB, 64 * MiB);
  auto limit = max_datasize(md);
  EXPECT_EQ(limit, (md.data_offset / 2 - 4096) * 8 * 4096);
  EXPECT_GT(limit, md.datasize);
  auto past = md.data_offset + limit + 1 * MiB;
  auto r = growth_target(md, past);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), errc::invalid_argument);
  EXPECT_NE(r.error().message().find(std::to_string(limit)), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("recreate"), std::string::npos);
  auto before = md;
  EXPECT_FALSE(grow_metadata(md, limit + 4096));
  expect_same(before, md);  // a refused grow changes nothing
  // Exactly the limit fits, and reads back.
  ASSERT_EQ(::truncate(path("disk").c_str(), static_cast<off_t>(md.data_offset + limit)), 0);
  ASSERT_TRUE(p.refresh_size());
  auto target = growth_target(md, p.size());
  ASSERT_TRUE(target) << target.error().message();
  EXPECT_EQ(*target, limit);
  ASSERT_TRUE(grow_metadata(md, limit));
  EXPECT_EQ(md.bitmap.size(), md.data_offset / 2 - 4096);
  ASSERT_TRUE(write_metadata(p, md));
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->datasize, limit);
}

TEST(GrowMetadata, RefusesSmallerEqualAndPartialBlockSizes) {
  metadata md;
  md.resource = "shared";
  md.datasize = 64 * MiB;
  md.extent_size = 2 * MiB;
  md.data_offset = 16384;
  md.bitmap.assign(4, 0);
  auto before = md;
  EXPECT_FALSE(grow_metadata(md, 32 * MiB));
  EXPECT_FALSE(grow_metadata(md, 64 * MiB));
  EXPECT_FALSE(grow_metadata(md, 64 * MiB + 100));
  EXPECT_EQ(md.datasize, before.datasize);
  EXPECT_EQ(md.bitmap, before.bitmap);
  EXPECT_TRUE(growth_target(md, 16384 + 96 * MiB, 80 * MiB));
  EXPECT_EQ(*growth_target(md, 16384 + 96 * MiB, 80 * MiB), 80 * MiB);
  EXPECT_FALSE(growth_target(md, 16384 + 96 * MiB, 128 * MiB));  // more than the provider holds
}

} // namespace
} // namespace hast

// --- room to grow: metadata with room on a provider --------------------------------

namespace hast {
namespace {

using Room = TempDir;

TEST_F(Room, CreateWithRoomReadsBackAndGrowsPastTheLayoutWithout) {
  auto p = make("disk", 64 * MiB);
  auto md = create_metadata(p, "shared", MiB, 64, 64 * MiB, 64 * 1024 * MiB);
  ASSERT_TRUE(md) << md.error().message();
  EXPECT_EQ(md->data_offset, 24576u);
  EXPECT_EQ(max_datasize(*md), 64 * 1024 * MiB);
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->data_offset, 24576u);
  EXPECT_EQ(back->datasize, md->datasize);
  // 40 GiB: past the 32 GiB an 8192-byte slot describes with 1 MiB extents.
  ASSERT_EQ(::truncate(path("disk").c_str(), static_cast<off_t>(40 * 1024 * MiB)), 0);
  auto target = growth_target(*back, *p.refresh_size());
  ASSERT_TRUE(target) << target.error().message();
  EXPECT_EQ(*target, 40 * 1024 * MiB - 24576);
  ASSERT_TRUE(grow_metadata(*back, *target));
  EXPECT_EQ(back->bitmap.size(), 40u * 1024 / 8);
  ASSERT_TRUE(write_metadata(p, *back));
  auto grown = read_metadata(p, "shared");
  ASSERT_TRUE(grown) << grown.error().message();
  EXPECT_EQ(grown->datasize, *target);
  EXPECT_EQ(grown->data_offset, 24576u);
  // Past the room: refused with the ceiling.
  ASSERT_EQ(::truncate(path("disk").c_str(), static_cast<off_t>(65 * 1024 * MiB)), 0);
  auto past = growth_target(*grown, *p.refresh_size());
  ASSERT_FALSE(past);
  EXPECT_NE(past.error().message().find(std::to_string(64 * 1024 * MiB)), std::string::npos)
      << past.error().message();
}

TEST_F(Room, ASlotWriteCoversTheHeaderAndTheBitmapOnly) {
  auto p = make("disk", 64 * MiB);
  auto md = *create_metadata(p, "shared", MiB, 64, 64 * MiB, 1024 * 1024 * MiB);
  // 1 TiB with 1 MiB extents: a 128 KiB bitmap, slots of 135168 bytes.
  ASSERT_EQ(md.data_offset, 2u * 135168);
  // create zeroed both slots whole.
  EXPECT_EQ(raw_read("disk", 8192, 135168 - 8192), std::vector<uint8_t>(135168 - 8192, 0));
  auto w = prepare_slot_write(md, md.sequence + 1);
  ASSERT_TRUE(w) << w.error().message();
  EXPECT_EQ(w->offset, 0u);  // sequence 2: slot A
  EXPECT_EQ(w->bytes->size(), 8192u);
  // The room past the bitmap is left as it is, and is never read.
  std::vector<uint8_t> junk(4096, 0xA5);
  raw_write("disk", 135168 + 8192, junk.data(), junk.size());
  ASSERT_TRUE(write_metadata(p, md));  // sequence 2, slot A
  ASSERT_TRUE(write_metadata(p, md));  // sequence 3, slot B
  EXPECT_EQ(raw_read("disk", 135168 + 8192, 4096), junk);
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->sequence, 3u);
  // Slot A's header destroyed: slot B is found at its place past the room.
  flip_byte("disk", 0);
  flip_byte("disk", 168);
  auto b = read_metadata(p, "shared");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->sequence, 3u);
  EXPECT_EQ(b->data_offset, 2u * 135168);
}

TEST_F(Room, MetadataWithoutRoomStillReadsAndGrowsAsBefore) {
  // What hast wrote before slots had room: 1 TiB with 2 MiB extents, a
  // 64 KiB bitmap in slots of 69632 bytes.
  auto p = make("disk", 1ull << 40);
  metadata md;
  md.resource = "shared";
  md.datasize = (1ull << 40) - 2 * 69632;
  md.extent_size = 2 * MiB;
  md.keepdirty = 64;
  md.data_offset = 2 * 69632;
  md.resuid = 7;
  md.bitmap.assign(65536, 0);
  md.sequence = 0;
  std::string a = encode_slot(md);
  raw_write("disk", 0, a.data(), a.size());
  md.sequence = 1;
  std::string b = encode_slot(md);
  raw_write("disk", 69632, b.data(), b.size());
  auto back = read_metadata(p, "shared");
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->data_offset, 2u * 69632);
  EXPECT_EQ(max_datasize(*back), 1ull << 40);
  // The rounding left room for a data area of exactly 1 TiB.
  auto grown = *back;
  ASSERT_EQ(::truncate(path("disk").c_str(), static_cast<off_t>((1ull << 40) + 2 * 69632)), 0);
  auto t = growth_target(grown, *p.refresh_size());
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(*t, 1ull << 40);
  ASSERT_TRUE(grow_metadata(grown, *t));
  ASSERT_TRUE(write_metadata(p, grown));
  EXPECT_EQ(read_metadata(p, "shared")->datasize, 1ull << 40);
  ASSERT_EQ(::truncate(path("disk").c_str(), static_cast<off_t>((1ull << 40) + 64 * MiB)), 0);
  auto past = growth_target(grown, *p.refresh_size());
  ASSERT_FALSE(past);
  EXPECT_NE(past.error().message().find("recreate"), std::string::npos);
}

TEST(Slot, TheDataOffsetMayLeaveRoomButMustHoldTheBitmapInWholeBlocks) {
  auto md = sample();
  md.data_offset = 2 * 3 * 4096;  // room: the slots are larger than the bitmap needs
  auto ok = decode_slot(bytes_of(encode_slot(md)));
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->data_offset, md.data_offset);
  for (uint64_t bad : {uint64_t{4096}, uint64_t{2 * 8192 + 4096}, uint64_t{2 * 8192 + 2}}) {
    md.data_offset = bad;
    auto r = decode_slot(bytes_of(encode_slot(md)));
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("does not follow the two slots"), std::string::npos);
  }
}

TEST(MarkExtents, MarksTheExtentsFromAnOffsetToTheEnd) {
  metadata md;
  md.extent_size = 2 * MiB;
  md.datasize = 20 * MiB - 4096;  // 10 extents, the last partial
  md.bitmap.assign(2, 0);
  md.bitmap[0] = 0x01;
  mark_extents(md, 7 * MiB);  // from inside extent 3
  EXPECT_EQ(md.bitmap, (std::vector<uint8_t>{0xF9, 0x03}));
}

} // namespace
} // namespace hast
