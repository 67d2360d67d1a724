// engine/store/pg_schema.h: the PostgreSQL store's schema and its migrations (engine/store/pg_schema.cpp).
#pragma once

#include "engine/status.h"

namespace orch {

class PgConn;

// Applies the missing migrations up to PgStore::kSchemaVersion; returns the version found before. Replicas opening
// at once queue on an advisory lock, and each re-reads the version under it: exactly one of them migrates. kInvalid
// when the database's schema is newer than this binary. Throws PgError.
Result<int> migrate_pg_schema(PgConn& c);

}  // namespace orch
