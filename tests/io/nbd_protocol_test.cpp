#include "io/net/nbd_protocol.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace hast::nbd {
namespace {

constexpr uint64_t export_size = 1u << 20; // 1 MiB
constexpr uint16_t all_flags = flag_has_flags | flag_send_flush | flag_send_fua | flag_send_trim
                               | flag_send_write_zeroes | flag_can_multi_conn;

request_header make(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
  return request_header{flags, type, 0x1122334455667788, offset, length};
}

uint32_t check(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0,
               uint16_t advertised = all_flags, uint64_t size = export_size) {
  return validate(make(type, offset, length, flags), size, advertised);
}

template <std::size_t N> void copy_to(uint8_t (&dst)[N], const std::array<uint8_t, N>& src) {
  std::copy(src.begin(), src.end(), dst);
}

// --- Big-endian helpers --------------------------------------------------------------

TEST(NbdCodec, BigEndianHelpersWriteTheMostSignificantByteFirst) {
  uint8_t b[8] = {};
  put_be16(b, 0x1234);
  EXPECT_EQ(b[0], 0x12);
  EXPECT_EQ(b[1], 0x34);
  put_be32(b, 0x12345678);
  EXPECT_EQ(b[0], 0x12);
  EXPECT_EQ(b[3], 0x78);
  EXPECT_EQ(get_be32(b), 0x12345678u);
  put_be64(b, 0x0102030405060708);
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[7], 0x08);
  EXPECT_EQ(get_be64(b), 0x0102030405060708u);
  EXPECT_EQ(get_be16(b), 0x0102);
}

TEST(NbdCodec, BigEndianHelpersRoundTripExtremeValues) {
  uint8_t b[8];
  for (uint64_t v : {uint64_t{0}, uint64_t{1}, std::numeric_limits<uint64_t>::max(),
                     uint64_t{0x8000000000000000}}) {
    put_be64(b, v);
    EXPECT_EQ(get_be64(b), v);
  }
  put_be32(b, 0xffffffff);
  EXPECT_EQ(get_be32(b), 0xffffffffu);
}

// --- Handshake ----------------------------------------------------------------------------

TEST(NbdCodec, HandshakeIsNbdmagicIhaveoptAndFixedNewstyleWithNoZeroes) {
  const auto hs = encode_handshake();
  EXPECT_EQ(std::memcmp(hs.data(), "NBDMAGIC", 8), 0);
  EXPECT_EQ(std::memcmp(hs.data() + 8, "IHAVEOPT", 8), 0);
  EXPECT_EQ(get_be16(hs.data() + 16), flag_fixed_newstyle | flag_no_zeroes);
}

TEST(NbdCodec, OptionHeaderRoundTrips) {
  uint8_t bytes[option_header_size];
  copy_to(bytes, encode_option_header({opt_go, 1234}));
  auto header = decode_option_header(bytes);
  ASSERT_TRUE(header);
  EXPECT_EQ(header->option, opt_go);
  EXPECT_EQ(header->length, 1234u);
}

TEST(NbdCodec, OptionHeaderWithoutIhaveoptIsRejected) {
  uint8_t bytes[option_header_size];
  copy_to(bytes, encode_option_header({opt_go, 0}));
  bytes[0] ^= 0xff;
  EXPECT_FALSE(decode_option_header(bytes));
}

TEST(NbdCodec, InfoRequestRoundTrips) {
  info_request in{"shared", {info_name, info_block_size}};
  auto bytes = encode_info_request(in);
  EXPECT_EQ(bytes.size(), 4u + 6 + 2 + 4);
  auto out = decode_info_request(bytes);
  ASSERT_TRUE(out);
  EXPECT_EQ(out->name, "shared");
  EXPECT_EQ(out->requests, in.requests);
}

TEST(NbdCodec, InfoRequestWithEmptyNameAndNoRequestsIsValid) {
  auto bytes = encode_info_request({});
  ASSERT_EQ(bytes.size(), 6u);
  auto out = decode_info_request(bytes);
  ASSERT_TRUE(out);
  EXPECT_TRUE(out->name.empty());
  EXPECT_TRUE(out->requests.empty());
}

TEST(NbdCodec, InfoRequestWhoseLengthsDoNotAddUpIsRejected) {
  auto bytes = encode_info_request({"shared", {info_name}});
  EXPECT_FALSE(decode_info_request(std::span(bytes).first(bytes.size() - 1)));
  bytes.push_back(0);
  EXPECT_FALSE(decode_info_request(bytes));
  std::vector<uint8_t> too_short{0, 0, 0};
  EXPECT_FALSE(decode_info_request(too_short));
  // A name length pointing past the end.
  std::vector<uint8_t> lying{0, 0, 0, 200, 'a', 0, 0};
  EXPECT_FALSE(decode_info_request(lying));
  // A name length near 2^32 must not wrap around.
  std::vector<uint8_t> huge{0xff, 0xff, 0xff, 0xff, 0, 0};
  EXPECT_FALSE(decode_info_request(huge));
}

TEST(NbdCodec, InfoRequestWithANameOverFourKibIsRejected) {
  info_request in{std::string(max_string_length + 1, 'x'), {}};
  EXPECT_FALSE(decode_info_request(encode_info_request(in)));
  in.name.pop_back();
  EXPECT_TRUE(decode_info_request(encode_info_request(in)));
}

TEST(NbdCodec, OptionReplyCarriesMagicOptionTypeAndLength) {
  auto bytes = encode_option_reply(opt_go, rep_err_unknown, std::string_view{"not primary"});
  ASSERT_EQ(bytes.size(), option_reply_header_size + 11);
  uint8_t head[option_reply_header_size];
  std::copy_n(bytes.begin(), option_reply_header_size, head);
  auto header = decode_option_reply_header(head);
  ASSERT_TRUE(header);
  EXPECT_EQ(get_be64(bytes.data()), 0x3e889045565a9u);
  EXPECT_EQ(header->option, opt_go);
  EXPECT_EQ(header->type, 0x80000006u);
  EXPECT_EQ(header->length, 11u);
  EXPECT_EQ(std::string(bytes.begin() + option_reply_header_size, bytes.end()), "not primary");
}

TEST(NbdCodec, AckHasNoPayload) {
  auto bytes = encode_option_reply(opt_abort, rep_ack);
  ASSERT_EQ(bytes.size(), option_reply_header_size);
  EXPECT_EQ(get_be32(bytes.data() + 12), rep_ack);
  EXPECT_EQ(get_be32(bytes.data() + 16), 0u);
}

TEST(NbdCodec, ErrorReplyTypesHaveBit31Set) {
  EXPECT_EQ(rep_err_unsup, 0x80000001u);
  EXPECT_EQ(rep_err_policy, 0x80000002u);
  EXPECT_EQ(rep_err_invalid, 0x80000003u);
  EXPECT_EQ(rep_err_platform, 0x80000004u);
  EXPECT_EQ(rep_err_tls_reqd, 0x80000005u);
  EXPECT_EQ(rep_err_unknown, 0x80000006u);
  EXPECT_EQ(rep_err_shutdown, 0x80000007u);
  EXPECT_EQ(rep_err_block_size_reqd, 0x80000008u);
  EXPECT_EQ(rep_err_too_big, 0x80000009u);
}

TEST(NbdCodec, ServerReplyCarriesTheNameLengthThenTheName) {
  auto bytes = encode_server_reply("shared");
  ASSERT_EQ(bytes.size(), option_reply_header_size + 4 + 6);
  EXPECT_EQ(get_be32(bytes.data() + 8), opt_list);
  EXPECT_EQ(get_be32(bytes.data() + 12), rep_server);
  EXPECT_EQ(get_be32(bytes.data() + 16), 10u);
  EXPECT_EQ(get_be32(bytes.data() + 20), 6u);
  EXPECT_EQ(std::string(bytes.begin() + 24, bytes.end()), "shared");
}

TEST(NbdCodec, InfoExportCarriesSizeAndTransmissionFlags) {
  auto bytes = encode_info_export(opt_go, 0x123456789a, all_flags);
  ASSERT_EQ(bytes.size(), option_reply_header_size + 12);
  EXPECT_EQ(get_be32(bytes.data() + 12), rep_info);
  EXPECT_EQ(get_be32(bytes.data() + 16), 12u);
  const uint8_t* p = bytes.data() + option_reply_header_size;
  EXPECT_EQ(get_be16(p), info_export);
  EXPECT_EQ(get_be64(p + 2), 0x123456789au);
  EXPECT_EQ(get_be16(p + 10), all_flags);
}

TEST(NbdCodec, InfoNameAndDescriptionCarryTheirText) {
  auto name = encode_info_name(opt_info, "shared");
  EXPECT_EQ(get_be32(name.data() + 16), 8u);
  EXPECT_EQ(get_be16(name.data() + 20), info_name);
  EXPECT_EQ(std::string(name.begin() + 22, name.end()), "shared");
  auto description = encode_info_description(opt_info, "hast resource");
  EXPECT_EQ(get_be16(description.data() + 20), info_description);
  EXPECT_EQ(std::string(description.begin() + 22, description.end()), "hast resource");
}

TEST(NbdCodec, InfoBlockSizeCarriesMinimumPreferredAndMaximum) {
  auto bytes = encode_info_block_size(opt_go, 1, 4096, max_payload);
  ASSERT_EQ(bytes.size(), option_reply_header_size + 14);
  const uint8_t* p = bytes.data() + option_reply_header_size;
  EXPECT_EQ(get_be16(p), info_block_size);
  EXPECT_EQ(get_be32(p + 2), 1u);
  EXPECT_EQ(get_be32(p + 6), 4096u);
  EXPECT_EQ(get_be32(p + 10), 32u << 20);
}

TEST(NbdCodec, ExportNameReplyHas124ZeroesUnlessNoZeroesWasNegotiated) {
  auto with = encode_export_name_reply(4096, flag_has_flags, false);
  ASSERT_EQ(with.size(), 8u + 2 + 124);
  EXPECT_EQ(get_be64(with.data()), 4096u);
  EXPECT_EQ(get_be16(with.data() + 8), flag_has_flags);
  EXPECT_TRUE(std::all_of(with.begin() + 10, with.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(encode_export_name_reply(4096, flag_has_flags, true).size(), 10u);
}

TEST(NbdCodec, TransmissionFlagsFollowTheExportInfo) {
  export_info info;
  EXPECT_EQ(transmission_flags(info), all_flags);
  info.can_multi_conn = false;
  info.can_trim = false;
  EXPECT_EQ(transmission_flags(info),
            flag_has_flags | flag_send_flush | flag_send_fua | flag_send_write_zeroes);
  export_info ro;
  ro.read_only = true;
  // A read-only export offers no trim or write-zeroes: they would only fail.
  EXPECT_EQ(transmission_flags(ro), flag_has_flags | flag_read_only | flag_send_flush
                                        | flag_send_fua | flag_can_multi_conn);
}

// --- Requests and replies -------------------------------------------------------------------

TEST(NbdCodec, RequestRoundTrips) {
  request_header in{cmd_flag_fua, cmd_write, 0xdeadbeefcafebabe, 0x0102030405060708, 0x01020304};
  uint8_t bytes[request_size];
  copy_to(bytes, encode_request(in));
  EXPECT_EQ(get_be32(bytes), 0x25609513u);
  auto out = decode_request(bytes);
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, in);
}

TEST(NbdCodec, RequestWithBadMagicIsRejected) {
  uint8_t bytes[request_size];
  copy_to(bytes, encode_request(make(cmd_read, 0, 512)));
  bytes[3] ^= 1;
  EXPECT_FALSE(decode_request(bytes));
}

TEST(NbdCodec, SimpleReplyCarriesMagicErrorAndCookie) {
  auto bytes = encode_simple_reply(einval, 0x0102030405060708);
  EXPECT_EQ(get_be32(bytes.data()), 0x67446698u);
  EXPECT_EQ(get_be32(bytes.data() + 4), 22u);
  EXPECT_EQ(get_be64(bytes.data() + 8), 0x0102030405060708u);
  uint8_t raw[simple_reply_size];
  copy_to(raw, bytes);
  auto reply = decode_simple_reply(raw);
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error, einval);
  EXPECT_EQ(reply->cookie, 0x0102030405060708u);
  raw[0] = 0;
  EXPECT_FALSE(decode_simple_reply(raw));
}

TEST(NbdCodec, ConstantsMatchTheProtocol) {
  EXPECT_EQ(opt_export_name, 1u);
  EXPECT_EQ(opt_abort, 2u);
  EXPECT_EQ(opt_list, 3u);
  EXPECT_EQ(opt_starttls, 5u);
  EXPECT_EQ(opt_info, 6u);
  EXPECT_EQ(opt_go, 7u);
  EXPECT_EQ(opt_structured_reply, 8u);
  EXPECT_EQ(flag_can_multi_conn, 0x100);
  EXPECT_EQ(flag_send_write_zeroes, 0x40);
  EXPECT_EQ(cmd_write_zeroes, 6);
  EXPECT_EQ(cmd_block_status, 7);
  EXPECT_EQ(eshutdown, 108u);
  EXPECT_EQ(enotsup, 95u);
  EXPECT_EQ(eoverflow, 75u);
}

// --- validate() -------------------------------------------------------------------------------

TEST(NbdValidate, ReadOfTheLastByteIsAccepted) {
  EXPECT_EQ(check(cmd_read, export_size - 1, 1), 0u);
}

TEST(NbdValidate, ReadOfTheWholeExportIsAccepted) {
  EXPECT_EQ(check(cmd_read, 0, export_size), 0u);
}

TEST(NbdValidate, ReadOneBytePastTheEndIsEinval) {
  EXPECT_EQ(check(cmd_read, export_size - 1, 2), einval);
  EXPECT_EQ(check(cmd_read, export_size, 1), einval);
}

TEST(NbdValidate, WriteOneBytePastTheEndIsEnospc) {
  EXPECT_EQ(check(cmd_write, export_size - 1, 1), 0u);
  EXPECT_EQ(check(cmd_write, export_size - 1, 2), enospc);
  EXPECT_EQ(check(cmd_write, export_size, 1), enospc);
}

TEST(NbdValidate, WriteZeroesPastTheEndIsEnospcAndTrimPastTheEndIsEinval) {
  EXPECT_EQ(check(cmd_write_zeroes, export_size - 512, 512), 0u);
  EXPECT_EQ(check(cmd_write_zeroes, export_size - 512, 513), enospc);
  EXPECT_EQ(check(cmd_trim, export_size - 512, 512), 0u);
  EXPECT_EQ(check(cmd_trim, export_size - 512, 513), einval);
}

TEST(NbdValidate, ZeroLengthIsEinval) {
  for (uint16_t type : {cmd_read, cmd_write, cmd_trim, cmd_write_zeroes})
    EXPECT_EQ(check(type, 0, 0), einval) << command_name(type);
}

TEST(NbdValidate, ReadAndWriteOfExactly32MibAreAccepted) {
  const uint64_t big = 1ull << 30;
  EXPECT_EQ(check(cmd_read, 0, max_payload, 0, all_flags, big), 0u);
  EXPECT_EQ(check(cmd_write, 0, max_payload, 0, all_flags, big), 0u);
}

TEST(NbdValidate, ReadAndWriteOf32MibPlusOneAreEinval) {
  const uint64_t big = 1ull << 30;
  EXPECT_EQ(check(cmd_read, 0, max_payload + 1, 0, all_flags, big), einval);
  EXPECT_EQ(check(cmd_write, 0, max_payload + 1, 0, all_flags, big), einval);
}

TEST(NbdValidate, TrimAndWriteZeroesMayBeLargerThan32Mib) {
  const uint64_t big = 1ull << 33;
  EXPECT_EQ(check(cmd_trim, 0, 0xffffffff, 0, all_flags, big), 0u);
  EXPECT_EQ(check(cmd_write_zeroes, 0, 0xffffffff, 0, all_flags, big), 0u);
}

TEST(NbdValidate, OffsetPlusLengthOverflowingIsPastTheEnd) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  EXPECT_EQ(check(cmd_read, max, 1), einval);
  EXPECT_EQ(check(cmd_read, max - 10, 4096), einval);
  EXPECT_EQ(check(cmd_write, max - 10, 4096), enospc);
  EXPECT_EQ(check(cmd_trim, max, 0xffffffff), einval);
  // Even on an export of the largest possible size.
  EXPECT_EQ(check(cmd_read, max, 1, 0, all_flags, max), einval);
  EXPECT_EQ(check(cmd_read, max - 1, 1, 0, all_flags, max), 0u);
}

TEST(NbdValidate, UnknownCommandIsEinval) {
  EXPECT_EQ(check(9, 0, 512), einval);
  EXPECT_EQ(check(0xffff, 0, 512), einval);
  EXPECT_EQ(check(cmd_resize, 0, 512), einval);
}

TEST(NbdValidate, BlockStatusWithoutStructuredRepliesIsEinval) {
  EXPECT_EQ(check(cmd_block_status, 0, 512), einval);
}

TEST(NbdValidate, CommandsNotAdvertisedAreEinval) {
  EXPECT_EQ(check(cmd_cache, 0, 512), einval);
  EXPECT_EQ(check(cmd_flush, 0, 0, 0, flag_has_flags), einval);
  EXPECT_EQ(check(cmd_trim, 0, 512, 0, flag_has_flags), einval);
  EXPECT_EQ(check(cmd_write_zeroes, 0, 512, 0, flag_has_flags), einval);
  EXPECT_EQ(check(cmd_cache, 0, 512, 0, all_flags | flag_send_cache), 0u);
}

TEST(NbdValidate, UnknownFlagBitIsEinval) {
  EXPECT_EQ(check(cmd_read, 0, 512, 1u << 15), einval);
  EXPECT_EQ(check(cmd_write, 0, 512, 1u << 6), einval);
}

TEST(NbdValidate, FuaIsValidOnEveryCommandOnlyWhenAdvertised) {
  EXPECT_EQ(check(cmd_write, 0, 512, cmd_flag_fua), 0u);
  EXPECT_EQ(check(cmd_read, 0, 512, cmd_flag_fua), 0u);
  EXPECT_EQ(check(cmd_flush, 0, 0, cmd_flag_fua), 0u);
  EXPECT_EQ(check(cmd_write, 0, 512, cmd_flag_fua, flag_has_flags), einval);
}

TEST(NbdValidate, NoHoleIsValidOnlyOnWriteZeroes) {
  EXPECT_EQ(check(cmd_write_zeroes, 0, 512, cmd_flag_no_hole), 0u);
  EXPECT_EQ(check(cmd_write_zeroes, 0, 512, cmd_flag_no_hole | cmd_flag_fua), 0u);
  EXPECT_EQ(check(cmd_write, 0, 512, cmd_flag_no_hole), einval);
  EXPECT_EQ(check(cmd_trim, 0, 512, cmd_flag_no_hole), einval);
}

TEST(NbdValidate, DontFragmentAndFastZeroNeedTheirTransmissionFlags) {
  EXPECT_EQ(check(cmd_read, 0, 512, cmd_flag_df), einval);
  EXPECT_EQ(check(cmd_read, 0, 512, cmd_flag_df, all_flags | flag_send_df), 0u);
  EXPECT_EQ(check(cmd_write_zeroes, 0, 512, cmd_flag_fast_zero), einval);
  EXPECT_EQ(check(cmd_write_zeroes, 0, 512, cmd_flag_fast_zero, all_flags | flag_send_fast_zero),
            0u);
}

TEST(NbdValidate, FlushMustHaveZeroOffsetAndLength) {
  EXPECT_EQ(check(cmd_flush, 0, 0), 0u);
  EXPECT_EQ(check(cmd_flush, 0, 512), einval);
  EXPECT_EQ(check(cmd_flush, 512, 0), einval);
}

TEST(NbdValidate, WritesToAReadOnlyExportAreEperm) {
  const uint16_t ro = all_flags | flag_read_only;
  EXPECT_EQ(check(cmd_write, 0, 512, 0, ro), eperm);
  EXPECT_EQ(check(cmd_trim, 0, 512, 0, ro), eperm);
  EXPECT_EQ(check(cmd_write_zeroes, 0, 512, 0, ro), eperm);
  EXPECT_EQ(check(cmd_read, 0, 512, 0, ro), 0u);
}

TEST(NbdValidate, AnEmptyExportAcceptsNoRange) {
  EXPECT_EQ(check(cmd_read, 0, 1, 0, all_flags, 0), einval);
  EXPECT_EQ(check(cmd_write, 0, 1, 0, all_flags, 0), enospc);
  EXPECT_EQ(check(cmd_flush, 0, 0, 0, all_flags, 0), 0u);
}

TEST(NbdCodec, NamesForLogLinesCoverTheKnownValues) {
  EXPECT_EQ(command_name(cmd_write_zeroes), "WRITE_ZEROES");
  EXPECT_EQ(command_name(42), "unknown command");
  EXPECT_EQ(option_name(opt_go), "GO");
  EXPECT_EQ(error_name(enospc), "ENOSPC");
}

} // namespace
} // namespace hast::nbd
