/* writeback (instruction): a stub that queues nothing; the DS write-back replaces this file. */
#include "writeback.h"

enum status writeback_enqueue(struct db_conn *conn, const struct writeback_command *cmd)
{
    (void)conn;
    (void)cmd;
    return STATUS_OK;
}
