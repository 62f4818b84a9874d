//! Enums invoicing stores as text (a `CHECK` constraint in the migrations
//! lists the same names). Reading a name this code does not know is an error
//! — as a column (`sqlx::Decode`) and inside a JSON document (`serde`) —
//! never a silent default.

/// A stored name that no variant has.
#[derive(Debug, thiserror::Error)]
#[error("stored {kind} {value:?} is not one this version of invoicing knows")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

/// Declares an enum stored as text: `name()`, `from_name()`, serde as the
/// name, and sqlx decoding from a `text` column.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            #[allow(dead_code)]
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            #[allow(dead_code)]
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }

            /// The value of a stored name.
            pub fn from_name(
                text: &str,
            ) -> ::std::result::Result<$name, $crate::text_enum::UnknownName> {
                match text {
                    $( $text => Ok($name::$variant), )+
                    _ => Err($crate::text_enum::UnknownName {
                        kind: stringify!($name),
                        value: text.to_owned(),
                    }),
                }
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> ::std::result::Result<$name, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok($name::from_name(text)?)
            }
        }
    };
}

pub(crate) use text_enum;
