"""DRF serializer of ``GoldenSerialized`` (same output as the golden project's)."""

from rest_framework import serializers

from masterapp.models import GoldenSerialized


class GoldenSerializedSerializer(serializers.ModelSerializer):
    parent_name = serializers.CharField(source='parent.name')
    tags = serializers.SerializerMethodField()

    class Meta:
        model = GoldenSerialized
        fields = ('id', 'name', 'price', 'happened', 'parent', 'parent_name', 'tags')

    def get_tags(self, obj):
        return ['golden', 'ü/x', len(obj.name)]
