// engine/store/sqlite_schema.h: the SQLite store's schema and its migrations (engine/store/sqlite_schema.cpp).
#pragma once

#include <SQLiteCpp/Database.h>

#include "engine/status.h"

namespace orch {

// Applies the missing migrations up to SqliteStore::kSchemaVersion in one IMMEDIATE transaction; returns the version
// found. Safe against other processes opening the same file: the version is re-read under the write lock. kInvalid
// when the file's schema is newer than this binary. Throws SQLite::Exception.
Result<int> migrate_sqlite_schema(SQLite::Database& db);

}  // namespace orch
