#ifndef TENDER_CHIREDIS_SHIM_H
#define TENDER_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
