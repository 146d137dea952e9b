# The sources outside storage/ that the fuzz targets reach: the fuzz build
# (tests/fuzz/CMakeLists.txt) and the corpus replay unit test
# (tests/CMakeLists.txt) compile these rather than the whole client and server
# libraries, which the parsers do not need.
set(CAIRN_FUZZ_PARSER_EXTRA_SOURCES
  client/encryption_key.cc client/guest_agent.cc client/json_splitter.cc client/nbd_protocol.cc
  client/qmp_client.cc client/unix_socket.cc
  server/calendar_event.cc)
list(TRANSFORM CAIRN_FUZZ_PARSER_EXTRA_SOURCES PREPEND ${PROJECT_SOURCE_DIR}/)
