// Keeps cairn_testutil non-empty before any *_testutil.cc exists.
