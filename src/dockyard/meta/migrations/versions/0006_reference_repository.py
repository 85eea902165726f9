"""manifest_references carry their manifest's repository; indexes for per-repository questions

"Does some manifest of repository R reference digest D?" is the collector's question for
every layer link it reviews. With the repository on the reference row it is one index
search (repository_id, digest, kind) whatever the size of the store or the popularity of
the layer; through a join on manifests it cost a search per reference of D, or a scan.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('manifest_references') as batch_op:
        batch_op.add_column(sa.Column('repository_id', sa.Integer(), nullable=True))
    op.execute("UPDATE manifest_references SET repository_id = "
               "(SELECT manifests.repository_id FROM manifests WHERE manifests.id = manifest_references.manifest_id)")
    op.create_index('ix_manifest_references_repository', 'manifest_references',
                    ['repository_id', 'digest', 'kind'], unique=False)
    # a repository's active manifests (retention planning, one repository at a time): without
    # it SQLite searched ix_manifests_state_scrub (state=?), all active manifests of the store
    op.create_index('ix_manifests_repository_state', 'manifests', ['repository_id', 'state'], unique=False)
    # "does repository R still have an upload?" (the collector's emptiness check)
    op.create_index('ix_uploads_repository', 'uploads', ['repository_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_uploads_repository', table_name='uploads')
    op.drop_index('ix_manifests_repository_state', table_name='manifests')
    op.drop_index('ix_manifest_references_repository', table_name='manifest_references')
    with op.batch_alter_table('manifest_references') as batch_op:
        batch_op.drop_column('repository_id')
